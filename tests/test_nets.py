"""dfs.nets: the diffusers builders give the shapes the maths needs, and a folder and a hub id load the same way."""
import pytest
import torch

from dfs.nets import (WeightsUnavailable, build_autoencoder, build_cond_unet, build_unet, downsampling_factor,
                      load_pretrained, n_params)
from dfs.latent import decode, encode, quantize


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("f", [1, 2, 4])
def test_autoencoder_shapes_and_round_trip(kind, f):
    torch.manual_seed(0)
    ae = build_autoencoder(kind, f, in_channels=1, latent_channels=3, sample_size=16).eval()
    assert downsampling_factor(ae) == f
    x = torch.rand(2, 1, 16, 12) * 2 - 1          # non-square: h and w are divided separately
    with torch.no_grad():
        z = encode(ae, x)
        assert z.shape == (2, 3, 16 // f, 12 // f)
        x_hat = decode(ae, z)
        assert x_hat.shape == x.shape
        if kind == "vq":
            # the decoder snaps z to its nearest codebook vectors: decoding z or its quantised code is the same
            z_q, e, idx = quantize(ae, z)
            torch.testing.assert_close(decode(ae, z_q), x_hat)
            codebook = ae.quantize.embedding.weight
            flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
            nearest = torch.cdist(flat, codebook).argmin(1)
            assert torch.equal(idx.reshape(-1), nearest)
            torch.testing.assert_close(e.permute(0, 2, 3, 1).reshape(-1, 3), codebook[nearest])
        else:
            # a KL encoder's mean is deterministic; a posterior sample differs from it
            torch.testing.assert_close(encode(ae, x), z)
            assert not torch.allclose(encode(ae, x, sample=True), z)


def test_builders_reject_bad_sizes():
    with pytest.raises(ValueError, match="power of two"):
        build_autoencoder("kl", f=3)
    with pytest.raises(ValueError, match="kind"):
        build_autoencoder("gan", f=2)
    with pytest.raises(ValueError, match="divisible by f"):
        build_autoencoder("kl", f=8, sample_size=12)
    with pytest.raises(ValueError, match="widths"):
        build_autoencoder("kl", f=8, channels=(8, 8))
    with pytest.raises(ValueError, match="GroupNorm"):
        build_autoencoder("vq", f=2, channels=(6, 8), norm_num_groups=4)
    with pytest.raises(ValueError, match="preset"):
        build_unet(preset="huge")
    with pytest.raises(ValueError, match="halves its input"):
        build_unet(sample_size=6, block_out_channels=(8, 8, 8), norm_num_groups=4)


def test_unets_map_to_their_input_shape_and_the_cross_attention_one_listens_to_its_tokens():
    torch.manual_seed(0)
    unet = build_unet(sample_size=8, in_channels=1)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 10, 999])
    assert unet(x, t).sample.shape == x.shape
    cond = build_cond_unet(sample_size=4, in_channels=4, cross_attention_dim=16).eval()
    z = torch.randn(2, 4, 4, 4)
    tok = torch.randn(2, 3, 16)
    with torch.no_grad():
        out = cond(z, t[:2], encoder_hidden_states=tok).sample
        assert out.shape == z.shape
        assert not torch.allclose(out, cond(z, t[:2], encoder_hidden_states=tok.flip(0)).sample)
        # cross-attention is a weighted mean over tokens: repeating the token set leaves it unchanged
        torch.testing.assert_close(out, cond(z, t[:2], encoder_hidden_states=torch.cat([tok, tok], 1)).sample)
    total = n_params(cond)
    assert total == sum(p.numel() for p in cond.parameters())
    cond.down_blocks.requires_grad_(False)
    assert 0 < n_params(cond, trainable_only=True) < total


@pytest.mark.parametrize("kind", ["kl", "vq", "unet", "cond_unet"])
def test_load_pretrained_from_a_folder_gives_the_same_model(kind, tmp_path):
    torch.manual_seed(1)
    model = {"kl": lambda: build_autoencoder("kl", 2, sample_size=8),
             "vq": lambda: build_autoencoder("vq", 2, sample_size=8),
             "unet": lambda: build_unet(8, 1),
             "cond_unet": lambda: build_cond_unet(4, 4, 16)}[kind]().eval()
    if kind in ("kl", "vq"):
        model.register_to_config(scaling_factor=0.77)
    model.save_pretrained(tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m", kind).eval()   # a Path …
    again = load_pretrained(str(tmp_path / "m"), kind)       # … or a string: the same call as for a hub id
    assert type(loaded) is type(model) is type(again)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    if kind in ("kl", "vq"):
        assert loaded.config.scaling_factor == 0.77
        x = torch.randn(2, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(decode(loaded, encode(loaded, x)), decode(model, encode(model, x)))


def test_hub_id_offline_and_not_cached_says_it_needs_internet(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="need internet once") as err:
        load_pretrained("stabilityai/sd-vae-ft-mse-not-a-real-copy", "kl")
    assert "HF_HUB_OFFLINE" in str(err.value)
    # a pipeline repository: the model's subfolder is picked and named in the message
    with pytest.raises(WeightsUnavailable, match="vqvae"):
        load_pretrained("CompVis/ldm-celebahq-256", "vq")


def test_load_pretrained_rejects_missing_paths_and_unknown_kinds(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        load_pretrained(str(tmp_path / "nothing" / "here"), "kl")
    with pytest.raises(ValueError, match="unknown kind"):
        load_pretrained(tmp_path, "gan")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="folder"):
        load_pretrained(tmp_path / "w.safetensors", "kl")
