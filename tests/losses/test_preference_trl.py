"""preference_loss, simpo_loss, orpo_loss and the DPOTrainer adapter against TRL's own loss code.

TRL 1.16 computes its DPO losses inside ``DPOTrainer._compute_loss``; it is called unbound here on a
minimal stand-in trainer whose "model" returns fixed per-token log-probs (what TRL's fused LM head
returns), so both sides see the same inputs. Skipped without TRL.
"""

from __future__ import annotations

import math
import types
from collections import defaultdict
from typing import Any

import pytest
import torch

from entropykit.losses import (
    orpo_loss,
    preference_loss,
    simpo_loss,
    token_logprobs,
    wpo_weights,
)
from entropykit.losses.preference import ld_sequence_logprobs, trl_dpo_trainer

trl = pytest.importorskip("trl")
dpo_mod = pytest.importorskip("trl.trainer.dpo_trainer")
DPOTrainer = dpo_mod.DPOTrainer

LOSSES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
          "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]
F_OK = ["sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop"]
B, L, V = 5, 8, 11


def _smoothing(lt: str) -> float:
    return 1e-3 if lt == "exo_pair" else 0.1 if lt in ("robust", "aot", "aot_unpaired") else 0.0


def _fake_trainer(loss_types: list[str], **kw: Any) -> types.SimpleNamespace:
    acc = types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x,
                                gather=lambda x: x)
    return types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), accelerator=acc, aux_loss_enabled=False,
        ld_alpha=kw.get("ld_alpha"), precompute_ref_logps=True, ref_model=None,
        f_divergence_type=kw.get("fdiv", "reverse_kl"), f_alpha_divergence_coef=kw.get("falpha", 0.5),
        loss_types=loss_types, loss_weights=kw.get("loss_weights") or [1.0] * len(loss_types),
        beta=kw.get("beta", 0.3), label_smoothing=kw.get("label_smoothing", 0.0),
        args=types.SimpleNamespace(discopop_tau=kw.get("tau", 0.05)),
        use_weighting=kw.get("weighting", False),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)


class _Batch:
    """Random logits -> per-token log-probs of a [chosen; rejected] batch with varied completion lengths."""

    def __init__(self, seed: int, dtype: torch.dtype = torch.float64, scale: float = 2.0,
                 ref_noise: float = 0.5) -> None:
        g = torch.Generator().manual_seed(seed)
        self.logits = (scale * torch.randn(2 * B, L - 1, V, generator=g, dtype=dtype)).requires_grad_(True)
        self.ids = torch.randint(0, V, (2 * B, L), generator=g)
        cm = torch.zeros(2 * B, L, dtype=torch.long)
        lens = torch.randint(1, L, (2 * B,), generator=g)
        for i in range(2 * B):
            cm[i, 1:1 + int(lens[i])] = 1  # position 0 is the prompt
        self.cm = cm
        self.smask = cm[:, 1:].bool()
        self.tok = token_logprobs(self.logits, self.ids[:, 1:], mask=self.smask)
        with torch.no_grad():
            self.lss = torch.logsumexp(2 * self.logits, -1) - 2 * torch.logsumexp(self.logits, -1)
        noise = ref_noise * torch.randn(2 * B, L - 1, generator=g, dtype=dtype)
        ref_tok = torch.where(self.smask, self.tok.detach() + noise, 0.0)  # a reference near the policy
        self.ref_tok = ref_tok

    def model(self) -> Any:
        tok, lss = self.tok, self.lss

        class M:
            training = True

            def __call__(self, **kw: Any) -> Any:
                return types.SimpleNamespace(log_probs=tok, entropy=torch.zeros_like(tok),
                                             mean_logits=torch.zeros_like(tok),
                                             is_top1=torch.zeros_like(tok, dtype=torch.bool),
                                             log_sum_sq_probs=lss)
        return M()

    def inputs(self, ld_alpha: float | None = None) -> dict[str, Any]:
        rc, rr = self.ref_logps(ld_alpha)
        return {"input_ids": self.ids, "attention_mask": torch.ones_like(self.ids),
                "completion_mask": self.cm, "ref_chosen_logps": rc, "ref_rejected_logps": rr}

    def ref_logps(self, ld_alpha: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if ld_alpha is None:
            s = self.ref_tok.sum(1)
            return s[:B], s[B:]
        m = self.smask
        return ld_sequence_logprobs(self.ref_tok[:B], self.ref_tok[B:], m[:B], m[B:], ld_alpha)

    def ours(self, ld_alpha: float | None = None, weighting: bool = False, **kw: Any) -> torch.Tensor:
        if ld_alpha is None:
            s = self.tok.sum(1)
            pc, pr = s[:B], s[B:]
        else:
            m = self.smask
            pc, pr = ld_sequence_logprobs(self.tok[:B], self.tok[B:], m[:B], m[B:], ld_alpha)
        rc, rr = self.ref_logps(ld_alpha)
        n = self.cm.sum(1)
        w = None
        if weighting:
            ww = wpo_weights(self.logits, self.ids[:, 1:], mask=self.smask)
            w = ww[:B] * ww[B:]
        return preference_loss(pc, pr, rc, rr, chosen_lengths=n[:B], rejected_lengths=n[B:], weights=w,
                               **kw).loss


def _trl(batch: _Batch, loss_types: list[str], **kw: Any) -> tuple[torch.Tensor, Any]:
    fake = _fake_trainer(loss_types, **kw)
    loss = DPOTrainer._compute_loss(fake, batch.model(), batch.inputs(kw.get("ld_alpha")), False)
    return loss, fake


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    return g


@pytest.mark.parametrize("lt", LOSSES)
def test_every_loss_type_matches_trl(lt: str) -> None:
    b = _Batch(1)
    eps = _smoothing(lt)
    t, fake = _trl(b, [lt], label_smoothing=eps)
    o = b.ours(loss_type=lt, beta=0.3, label_smoothing=eps)
    assert abs(float((t - o).detach())) < 1e-6
    assert torch.allclose(_grad(t, b.logits), _grad(o, b.logits), atol=1e-6)
    # the logged rewards and margins
    s = b.tok.sum(1)
    rc, rr = b.ref_logps()
    out = preference_loss(s[:B], s[B:], rc, rr, loss_type=lt, beta=0.3, label_smoothing=eps,
                          chosen_lengths=b.cm.sum(1)[:B], rejected_lengths=b.cm.sum(1)[B:])
    m = fake._metrics["train"]
    for key, ours in (("rewards/chosen", out.chosen_rewards), ("rewards/rejected", out.rejected_rewards),
                      ("rewards/margins", out.margins), ("rewards/accuracies", out.accuracies)):
        assert abs(m[key][0] - float(ours.mean())) < 1e-6, key


@pytest.mark.parametrize("fdiv", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("lt", F_OK)
def test_f_divergences_match_trl(fdiv: str, lt: str) -> None:
    # TRL's alpha-divergence branch has no float64 clamp constant (KeyError): float32 there
    b = _Batch(2, torch.float32 if fdiv == "alpha_divergence" else torch.float64)
    eps = _smoothing(lt)
    for falpha in ((0.5, 0.2, 1.0) if fdiv == "alpha_divergence" else (0.5,)):
        t, _ = _trl(b, [lt], fdiv=fdiv, falpha=falpha, label_smoothing=eps)
        o = b.ours(loss_type=lt, beta=0.3, label_smoothing=eps, f_divergence=fdiv, f_alpha=falpha)
        assert abs(float((t - o).detach())) < 1e-6 * max(1.0, abs(float(t.detach()))), falpha
        assert torch.allclose(_grad(t, b.logits), _grad(o, b.logits), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("lt", ["sigmoid", "ipo", "bco_pair", "apo_down"])
def test_wpo_and_ld_dpo_match_trl(lt: str) -> None:
    b = _Batch(3)
    for ld in (None, 0.0, 0.4, 1.0):
        for weighting in (False, True):
            t, _ = _trl(b, [lt], ld_alpha=ld, weighting=weighting)
            o = b.ours(ld_alpha=ld, weighting=weighting, loss_type=lt, beta=0.3)
            assert abs(float((t - o).detach())) < 1e-6, (ld, weighting)
            assert torch.allclose(_grad(t, b.logits), _grad(o, b.logits), atol=1e-6)


def test_combined_losses_match_trl() -> None:
    b = _Batch(4)
    types_, w = ["sigmoid", "bco_pair", "apo_zero"], [0.8, 0.2, 1.5]
    t, _ = _trl(b, types_, loss_weights=w)
    o = b.ours(loss_type=types_, loss_weights=w, beta=0.3)
    assert abs(float((t - o).detach())) < 1e-6


def test_float32_inputs_match_trl() -> None:
    b = _Batch(5, torch.float32)
    for lt in ("sigmoid", "ipo", "exo_pair"):
        eps = _smoothing(lt)
        t, _ = _trl(b, [lt], label_smoothing=eps)
        assert abs(float((t - b.ours(loss_type=lt, beta=0.3, label_smoothing=eps)).detach())) < 1e-5


def test_simpo_matches_trl_cpo_loss() -> None:
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    g = torch.Generator().manual_seed(6)
    c, r = -2 * torch.rand(7, generator=g), -2 * torch.rand(7, generator=g)
    for beta, gamma, eps in ((2.0, 0.5, 0.0), (0.1, 1.2, 0.2)):
        fake = types.SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta,
                                     label_smoothing=eps, accelerator=types.SimpleNamespace(device="cpu"))
        losses, cr, rr = cpo.CPOTrainer.cpo_loss(fake, c, r)
        out = simpo_loss(c, r, beta=beta, gamma=gamma, label_smoothing=eps, reduction="none")
        assert torch.allclose(out.loss, losses, atol=1e-6)
        assert torch.allclose(out.chosen_rewards, cr) and torch.allclose(out.rejected_rewards, rr)


def test_orpo_matches_trl_odds_ratio_loss() -> None:
    orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    g = torch.Generator().manual_seed(7)
    c, r = -3 * torch.rand(9, generator=g) - 1e-3, -3 * torch.rand(9, generator=g) - 1e-3
    fake = types.SimpleNamespace(beta=0.25, accelerator=types.SimpleNamespace(device="cpu"))
    losses, cr, rr, _, _ = orpo.ORPOTrainer.odds_ratio_loss(fake, c, r)
    nll = torch.tensor(1.7)
    out = orpo_loss(c, r, beta=0.25, nll=nll, reduction="none")
    # TRL: loss = nll - mean(beta * log sigmoid(log odds))
    assert torch.allclose(out.loss, nll - losses, atol=1e-6)
    assert torch.allclose(out.margins, cr - rr)


# ------------------------------------------------------------------------------------------ adapter


def _adapter_self(loss_types: list[str], options: dict[str, Any] | None = None, **kw: Any) -> Any:
    fake = _fake_trainer(loss_types, **kw)
    fake.loss_options = dpo_mod_options(fake, options)
    fake.compute_ref_log_probs = None
    return fake


def dpo_mod_options(fake: Any, options: dict[str, Any] | None) -> dict[str, Any]:
    from entropykit.losses.preference import _trainer_options

    return _trainer_options(fake, options)


@pytest.mark.parametrize("lt", ["sigmoid", "ipo", "robust", "discopop"])
def test_adapter_loss_equals_trl(lt: str) -> None:
    cls = trl_dpo_trainer()
    assert issubclass(cls, DPOTrainer) and cls is trl_dpo_trainer()
    b = _Batch(8)
    eps = _smoothing(lt)
    for ld, weighting in ((None, False), (0.5, True)):
        t, tf = _trl(b, [lt], label_smoothing=eps, ld_alpha=ld, weighting=weighting, fdiv="js_divergence")
        me = _adapter_self([lt], label_smoothing=eps, ld_alpha=ld, weighting=weighting, fdiv="js_divergence")
        o = cls._compute_loss(me, b.model(), b.inputs(ld), False)
        assert abs(float((t - o).detach())) < 1e-6
        for key in ("rewards/chosen", "rewards/margins", "rewards/accuracies", "logps/chosen"):
            assert abs(me._metrics["train"][key][0] - tf._metrics["train"][key][0]) < 1e-6


def test_adapter_hdpo() -> None:
    cls = trl_dpo_trainer()
    b = _Batch(9)
    t, _ = _trl(b, ["sigmoid"])
    one = cls._compute_loss(_adapter_self(["sigmoid"], {"loss_type": "hdpo"}), b.model(), b.inputs(), False)
    assert abs(float((t - one).detach())) < 1e-9  # alpha = 1 is DPO
    sharp = cls._compute_loss(_adapter_self(["sigmoid"], {"loss_type": "hdpo", "hdpo_alpha": 0.7}), b.model(),
                              b.inputs(), False)
    s = b.tok.sum(1)
    rc, rr = b.ref_logps()
    ref = -torch.nn.functional.logsigmoid(0.7 * 0.3 * (s[:B] - s[B:]) - 0.3 * (rc - rr)).mean()
    assert abs(float((sharp - ref).detach())) < 1e-9


def test_adapter_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="f-divergence"):
        _adapter_self(["sigmoid"], {"loss_type": "bco_pair"}, fdiv="forward_kl")
    with pytest.raises(ValueError, match="weights"):
        _adapter_self(["sigmoid"], {"weights": torch.ones(1)})
    with pytest.raises(TypeError, match="base"):
        trl_dpo_trainer(int)


# ------------------------------------------------------------------------- a real DPOTrainer run


def _tiny_run(trainer_cls: Any, loss_options: dict[str, Any] | None = None,
              **config: Any) -> list[dict[str, Any]]:
    """Two optimizer steps of a 1-layer Llama (vocab 32, width 16) on 8 word-level pairs; no downloads."""
    import copy
    import tempfile

    datasets = pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(29)]
    vocab = {w: i for i, w in enumerate(words)}
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>",
                                               unk_token="<unk>")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                   pad_token_id=0, eos_token_id=1, bos_token_id=None)
    model = transformers.LlamaForCausalLM(cfg)
    ds = datasets.Dataset.from_dict({"prompt": ["w1 w2", "w3 w4 w5", "w6", "w7 w8"] * 2,
                                     "chosen": [" w9 w10", " w11", " w12 w13 w14", " w15"] * 2,
                                     "rejected": [" w16", " w17 w18", " w19", " w20 w21 w22"] * 2})
    with tempfile.TemporaryDirectory() as d:
        args = trl.DPOConfig(output_dir=d, max_steps=2, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, logging_steps=1, save_strategy="no", learning_rate=1e-2,
                             disable_tqdm=True, **config)
        extra = {} if loss_options is None else {"loss_options": loss_options}
        tr = trainer_cls(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                         processing_class=tok, **extra)
        tr.train()
        return [h for h in tr.state.log_history if "loss" in h]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_adapter_trains_like_trl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = {"loss_type": ["ipo", "sigmoid"], "loss_weights": [0.3, 1.0], "beta": 0.2,
              "f_divergence_type": "js_divergence", "use_weighting": True, "ld_alpha": 0.5}
    stock = _tiny_run(DPOTrainer, **config)
    ours = _tiny_run(trl_dpo_trainer(), **config)
    assert len(stock) == len(ours) == 2
    for a, b in zip(stock, ours):  # the same loss after one identical update
        for key in ("loss", "rewards/margins", "rewards/chosen", "logps/rejected"):
            assert abs(a[key] - b[key]) < 1e-5 * max(1.0, abs(a[key])), key
    hdpo = _tiny_run(trl_dpo_trainer(), {"loss_type": "hdpo", "hdpo_alpha": 0.5}, beta=0.2)
    assert len(hdpo) == 2 and all(math.isfinite(h["loss"]) for h in hdpo)
    assert hdpo[0]["loss"] != pytest.approx(math.log(2))  # alpha != 1: not DPO's log 2 at pi = pi_ref
