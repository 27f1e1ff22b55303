"""EntropyControl (the loss + entropy-control recipe) against a hand composition of the pieces, and the
TRL adapter: the subclass's loss equals GRPOTrainer's own on the same batch when the recipe is TRL's,
and a training step runs and moves the controllers (skipped without TRL)."""

from __future__ import annotations

import pytest
import torch

from entropykit import rl


def _batch(seed=0, b=4, t=6):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = lp + 0.1 * torch.randn(b, t, generator=g, dtype=torch.float64)
    ent = torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.8
    return old, lp, ent, adv, mask


def test_entropy_control_is_the_composition_of_the_pieces():
    old, lp, ent, adv, mask = _batch()
    lp = lp.requires_grad_()
    ent = ent.clone().requires_grad_()
    ctl = rl.EntropyControl("kl_cov", {"kl_cov_ratio": 0.2, "penalty": "cov"}, entropy_coef=0.01,
                            top_entropy_quantile=0.5, adaptive=rl.AdaptiveEntropyCoef(target=1.5, delta=0.02),
                            pic=rl.EntroPIC(target=1.5, kp=0.5, ki=0.1), pic_mode="weights")
    ctl.update(0.9)
    ctl.update(1.1)
    loss, m = ctl.loss(old, lp, ent, adv, mask)
    # by hand
    keep = rl.high_entropy_mask(ent.detach(), mask, 0.5)
    alpha = ctl.pic.alpha
    w = keep.double() * rl.entropic_weights(adv[:, None].expand_as(lp), alpha)
    ref, _ = rl.kl_cov_loss(old, lp, adv, mask, kl_cov_ratio=0.2, penalty="cov", weights=w)
    c = 0.01 + ctl.adaptive.coef  # below target: the adaptive coefficient applies
    ref = ref - c * (ent * keep).sum() / keep.sum()
    assert alpha > 0 and ctl.adaptive.coef == pytest.approx(0.04)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), abs=1e-12)
    assert m["entropy_coef"] == pytest.approx(c)
    g = torch.autograd.grad(loss, (lp, ent))
    r = torch.autograd.grad(ref, (lp, ent))
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(g, r, strict=True))


def test_pic_bonus_is_signed_and_follows_the_controller():
    old, lp, ent, adv, mask = _batch(1)
    ctl = rl.EntropyControl(pic=rl.EntroPIC(target=1.0, kp=1.0, ki=0.0), pic_mode="bonus", pic_scale=0.1)
    ctl.update(1.5)  # above target: alpha = -0.5 -> an entropy penalty
    assert ctl.coefficient == pytest.approx(-0.05)
    loss, m = ctl.loss(old, lp, ent, adv, mask)
    base, _ = rl.ppo_loss(old, lp, adv, mask)
    h = float((ent * mask).sum() / mask.sum())
    assert float(loss) == pytest.approx(float(base) + 0.05 * h, abs=1e-12)
    assert m["entropy"] == pytest.approx(h)


def test_entropy_control_bad_input():
    with pytest.raises(ValueError, match="method"):
        rl.EntropyControl("nope")
    with pytest.raises(ValueError, match="pic_mode"):
        rl.EntropyControl(pic_mode="gain")
    with pytest.raises(TypeError, match="unexpected"):
        rl.EntropyControl("vanilla", {"kl_cov_ratio": 0.1})
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        rl.EntropyControl(top_entropy_quantile=0.0)
    old, lp, ent, adv, mask = _batch()
    with pytest.raises(ValueError, match="entropy"):
        rl.EntropyControl().loss(old, lp, ent[:, :3], adv, mask)


# ---- TRL ------------------------------------------------------------------------------------------


def _trainer(tmp_path, control=None, **cfg):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_model_dir

    path = tiny_hf_model_dir(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    data = datasets.Dataset.from_dict({"prompt": ["The quick", "Entropy is", "A model", "Numbers 01"]})

    def reward(completions, **_):
        return [float(sum(ch.isdigit() for ch in c)) for c in completions]

    args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=5, max_steps=2, report_to="none", use_cpu=True,
                          save_strategy="no", logging_steps=1, seed=0, **cfg)
    cls = rl.trl_grpo_trainer() if control is not None else trl.GRPOTrainer
    kw = {"entropy_control": control} if control is not None else {}
    return cls(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok, **kw)


def _inputs(trainer):
    g = torch.Generator().manual_seed(0)
    vocab = trainer.model.config.vocab_size
    prompt = torch.randint(0, vocab, (4, 3), generator=g)
    comp = torch.randint(0, vocab, (4, 5), generator=g)
    cmask = torch.ones(4, 5, dtype=torch.long)
    cmask[2, 3:] = 0
    return {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": comp,
            "completion_mask": cmask, "advantages": torch.tensor([1.0, -0.5, 0.3, -0.8]),
            "old_per_token_logps": None}


def test_trl_subclass_equals_grpo_trainer_loss(tmp_path):
    """TRL's recipe (bnpo = token mean, clip 0.2 without dual clip, top-0.5 entropy mask, bonus 0.05)
    written as an EntropyControl gives GRPOTrainer's own loss and gradients on the same batch."""
    cfg = {"loss_type": "bnpo", "top_entropy_quantile": 0.5, "entropy_coef": 0.05, "beta": 0.0}
    theirs = _trainer(tmp_path / "a", **cfg)
    ours = _trainer(tmp_path / "b", rl.EntropyControl("vanilla", {"clip_ratio_c": None}, entropy_coef=0.05,
                                                      top_entropy_quantile=0.5), **cfg)
    ours.model.load_state_dict(theirs.model.state_dict())
    for t in (theirs, ours):
        t.model.train()
        for mod in t.model.modules():  # train mode (the accumulation path) without dropout's randomness
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        t.current_gradient_accumulation_steps = 2
    inputs = _inputs(theirs)
    ref = type(theirs).__mro__[0]._compute_loss(theirs, theirs.model, dict(inputs))
    loss = ours._compute_loss(ours.model, dict(inputs))
    assert float(loss) == pytest.approx(float(ref), abs=1e-6)
    gr = torch.autograd.grad(ref, list(theirs.model.parameters()), allow_unused=True)
    go = torch.autograd.grad(loss, list(ours.model.parameters()), allow_unused=True)
    for a, b in zip(gr, go, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6)


def test_trl_subclass_trains_and_updates_the_controller(tmp_path):
    ctl = rl.EntropyControl("kl_cov", {"kl_cov_ratio": 0.2, "penalty": "cov"},
                            adaptive=rl.AdaptiveEntropyCoef(target=100.0, delta=0.01))
    trainer = _trainer(tmp_path, ctl)
    trainer.train()
    assert ctl.adaptive.coef == pytest.approx(0.02)  # two optimizer steps below the (unreachable) target
    logged = [h for h in trainer.state.log_history if "entropy_coef" in h]
    assert logged and all(h["entropy"] > 0 for h in logged)
