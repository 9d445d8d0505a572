"""The classification model, objective and optimizer of multimodal_gru in PyTorch (benchmark only).

Layer for layer what `multimodal_gru.models.model.MultimodalModel` (fusion
`xattn_bidir`), `objective.compute_losses` and `optim.make_optimizer` do, so
that a train step can be timed against a PyTorch implementation that a PyTorch
user would write:

  per stream   LayerNorm -> bidirectional nn.GRU on packed sequences -> Linear(2H, H)
  fusion       per stream: pre-LN nn.MultiheadAttention over the other streams
               (key padding mask; queries without keys get no update), residual,
               pre-LN GELU MLP, residual; masked mean pooling and image-aligned steps
  heads        clip / step MLP heads, per-stream autoencoder decoders
  augment      noise, feature dropout, time masking, modality dropout, mixup
  loss         (soft) cross entropy on clip and steps + weighted reconstruction MSE
  optimizer    global-norm clipping, AdamW (decay on matrices only), warmup + cosine

`flax_to_torch` copies flax parameters into the torch model and
`torch_grads_to_flax` maps gradients back, so `check_equivalence` can compare
outputs, loss and every gradient of the two implementations.

Differences that do not change the cost: torch's GRU has separate b_hr, b_hz
hidden biases (ours folds them into the input bias); flax broadcasts the
attention-dropout mask over batch and heads; RNG streams differ.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

LN_EPS = 1e-6   # flax.linen.LayerNorm's epsilon


class StreamEncoder(nn.Module):

  def __init__(self, in_dim: int, hidden: int):
    super().__init__()
    self.input_norm = nn.LayerNorm(in_dim, eps=LN_EPS)
    self.gru = nn.GRU(in_dim, hidden, batch_first=True, bidirectional=True)
    self.merge_directions = nn.Linear(2 * hidden, hidden)

  def forward(self, x, mask):
    """x [B, T, D], mask [B, T] bool (padding at the end) -> [B, T, H], zero at padding."""
    lengths = mask.sum(1).clamp(min=1).cpu()   # packing needs >= 1; empty rows are masked below
    packed = nn.utils.rnn.pack_padded_sequence(self.input_norm(x), lengths, batch_first=True,
                                               enforce_sorted=False)
    y, _ = self.gru(packed)
    y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
    return self.merge_directions(y) * mask[..., None]


class CrossAttentionBlock(nn.Module):

  def __init__(self, width: int, num_heads: int, mlp_dim: int, dropout: float):
    super().__init__()
    self.norm_q = nn.LayerNorm(width, eps=LN_EPS)
    self.norm_kv = nn.LayerNorm(width, eps=LN_EPS)
    self.attention = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
    self.norm_mlp = nn.LayerNorm(width, eps=LN_EPS)
    self.mlp_in = nn.Linear(width, mlp_dim)
    self.mlp_out = nn.Linear(mlp_dim, width)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x, x_mask, context, context_mask):
    """x [B, Tq, H], x_mask [B, Tq], context [B, Tk, H], context_mask [B, Tk] -> [B, Tq, H]."""
    has_keys = context_mask.any(1)
    # A row without keys attends to all (finite, then zeroed) instead of producing NaN.
    key_padding_mask = ~context_mask & has_keys[:, None]
    y, _ = self.attention(self.norm_q(x), self.norm_kv(context), self.norm_kv(context),
                          key_padding_mask=key_padding_mask, need_weights=False)
    x = x + self.dropout(y * (has_keys[:, None, None] & x_mask[..., None]))
    y = self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(x)), approximate="tanh"))
    return (x + self.dropout(y)) * x_mask[..., None]


class MLPHead(nn.Module):

  def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
    super().__init__()
    self.dropout = nn.Dropout(dropout)
    self.hidden = nn.Linear(in_dim, hidden)
    self.out = nn.Linear(hidden, out_dim)

  def forward(self, x):
    return self.out(F.gelu(self.hidden(self.dropout(x)), approximate="tanh"))


def masked_mean(x, mask):
  mask = mask.to(x.dtype)[..., None]
  return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def align_steps(x, mask, target_mask):
  """x [B, T, H] resampled onto the target's steps by relative position -> [B, T', H]."""
  src_len = mask.sum(1, keepdim=True).float()
  dst_len = target_mask.sum(1, keepdim=True).float()
  pos = torch.arange(target_mask.shape[1], dtype=torch.float32)[None]
  idx = torch.floor((pos + 0.5) * src_len / dst_len.clamp(min=1.0)).long().clamp(0, x.shape[1] - 1)
  out = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
  return out * target_mask[..., None]


def augment_features(feats, masks, cfg):
  """augment.augment_features: noise, feature dropout, time masking, modality dropout."""
  names = sorted(feats)
  batch = feats[names[0]].shape[0]
  keep_modality = torch.rand(batch, len(names)) >= cfg.modality_dropout
  rescue = torch.randint(0, len(names), (batch,))
  keep_modality |= ~keep_modality.any(1, keepdim=True) & (torch.arange(len(names))[None] == rescue[:, None])
  out = {}
  for i, m in enumerate(names):
    x, step_mask = feats[m], masks[m][..., None].to(feats[m].dtype)
    if cfg.noise_std > 0:
      count = step_mask.sum((0, 1)).clamp(min=1.0)
      mean = (x * step_mask).sum((0, 1)) / count
      std = torch.sqrt(((x - mean).square() * step_mask).sum((0, 1)) / count)
      x = x + cfg.noise_std * std * torch.randn_like(x)
    if cfg.feature_dropout > 0:
      x = F.dropout(x, cfg.feature_dropout, training=True)
    if cfg.time_mask_prob > 0:
      x = x * (torch.rand(x.shape[:2]) >= cfg.time_mask_prob)[..., None]
    out[m] = x * keep_modality[:, i, None, None] * step_mask
  return out


def mixup(batch, num_classes: int, alpha: float, names):
  """augment.mixup: -> (mixed batch, clip targets [B, K], step targets [B, T, K])."""
  size = batch["label"].shape[0]
  lam = torch.distributions.Beta(alpha, alpha).sample((size,))
  perm = torch.randperm(size)
  mixed = dict(batch)
  for m in names:
    mixed[m] = lam[:, None, None] * batch[m] + (1 - lam[:, None, None]) * batch[m][perm]
    mixed[f"{m}_mask"] = batch[f"{m}_mask"] | batch[f"{m}_mask"][perm]
  clip = F.one_hot(batch["label"].long(), num_classes).float()
  step = F.one_hot(batch["step_label"].long(), num_classes).float()
  clip = lam[:, None] * clip + (1 - lam[:, None]) * clip[perm]
  step = lam[:, None, None] * step + (1 - lam[:, None, None]) * step[perm]
  mixed["step_valid"] = batch["step_valid"] & batch["step_valid"][perm]
  mixed["example_mask"] = batch["example_mask"] & batch["example_mask"][perm]
  return mixed, clip, step


class MultimodalModel(nn.Module):
  """MultimodalModel(task="classification", fusion="xattn_bidir") in PyTorch."""

  def __init__(self, config):
    super().__init__()
    if config.task != "classification" or config.model.fusion != "xattn_bidir":
      raise ValueError("the torch reference covers classification with fusion xattn_bidir")
    m, d = config.model, config.data
    if not (m.use_gru and m.bidirectional and m.gru_layers == 1):
      raise ValueError("the torch reference covers one bidirectional GRU layer per stream")
    self.names = sorted(d.modalities)
    self.config = config
    hidden, k = m.hidden_dim, d.num_classes
    self.encoders = nn.ModuleDict({n: StreamEncoder(d.dims[n], hidden) for n in self.names})
    self.fusion = nn.ModuleDict({
        f"{n}_attends_others_{layer}": CrossAttentionBlock(hidden, m.num_heads, m.mlp_dim, m.dropout)
        for layer in range(m.xattn_layers) for n in self.names})
    width = hidden * len(self.names)
    self.clip_head = MLPHead(width, hidden, k, m.dropout)
    self.step_head = MLPHead(width, hidden, k, m.dropout)
    self.decoders = nn.ModuleDict({n: MLPHead(hidden, hidden, d.dims[n], 0.0) for n in self.names})

  def forward(self, batch, augment_cfg=None):
    """batch: the batch contract as torch tensors; augment_cfg: config.augment or None."""
    feats = {n: batch[n] for n in self.names}
    masks = {n: batch[f"{n}_mask"] for n in self.names}
    inputs = augment_features(feats, masks, augment_cfg) if augment_cfg is not None else feats
    seqs = {n: self.encoders[n](inputs[n], masks[n]) for n in self.names}
    for layer in range(self.config.model.xattn_layers):
      updated = {}
      for n in self.names:
        others = [o for o in self.names if o != n]
        context = torch.cat([seqs[o] for o in others], 1)
        context_mask = torch.cat([masks[o] for o in others], 1)
        updated[n] = self.fusion[f"{n}_attends_others_{layer}"](seqs[n], masks[n], context, context_mask)
      seqs = updated
    pooled = torch.cat([masked_mean(seqs[n], masks[n]) for n in self.names], -1)
    steps = torch.cat([align_steps(seqs[n], masks[n], batch["image_mask"]) for n in self.names], -1)
    out = {"logits": self.clip_head(pooled), "step_logits": self.step_head(steps)}
    if self.config.autoencoder.enabled:
      out["recon"] = {n: self.decoders[n](seqs[n]) for n in self.names}
    return out


def soft_cross_entropy(logits, targets, mask):
  per_position = -(targets * F.log_softmax(logits, -1)).sum(-1)
  return (per_position * mask).sum() / mask.sum().clamp(min=1.0)


def compute_losses(outputs, batch, config, clip_targets=None, step_targets=None):
  """objective.compute_losses for classification -> (total, {name: scalar tensor})."""
  examples = batch["example_mask"].float()
  step_mask = (batch["step_valid"] & batch["example_mask"][:, None]).float()
  k = outputs["logits"].shape[-1]
  if clip_targets is None:
    smooth = config.loss.label_smoothing
    clip_targets = F.one_hot(batch["label"].long(), k).float() * (1 - smooth) + smooth / k
    step_targets = F.one_hot(batch["step_label"].long(), k).float() * (1 - smooth) + smooth / k
  parts = {"clip_loss": soft_cross_entropy(outputs["logits"], clip_targets, examples),
           "step_loss": soft_cross_entropy(outputs["step_logits"], step_targets, step_mask)}
  total = config.loss.clip_weight * parts["clip_loss"] + config.loss.step_weight * parts["step_loss"]
  if "recon" in outputs:
    recon = []
    for n in sorted(outputs["recon"]):
      r = outputs["recon"][n]
      mask = (batch[f"{n}_mask"] & batch["example_mask"][:, None]).float()
      per_step = (r - batch[n]).square().mean(-1)
      recon.append((per_step * mask).sum() / mask.sum().clamp(min=1.0))
    parts["recon_loss"] = sum(recon) / len(recon)
    total = total + config.autoencoder.weight * parts["recon_loss"]
  parts["loss"] = total
  return total, parts


def learning_rate(config, step: int) -> float:
  """optax.warmup_cosine_decay_schedule as built by optim.learning_rate_schedule."""
  o, num_steps = config.optim, config.train.num_steps
  warmup, decay_steps, end = min(o.warmup_steps, max(num_steps - 1, 0)), max(num_steps, 1), 0.01 * o.learning_rate
  if step < warmup:
    return o.learning_rate * step / warmup
  progress = min(step - warmup, decay_steps - warmup) / max(decay_steps - warmup, 1)
  return end + (o.learning_rate - end) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
  """One optimisation step of MultimodalModel: augment, forward, losses, backward, clip, AdamW.

  compile: run forward + loss through torch.compile (the optimizer stays eager,
  fused AdamW).
  """

  def __init__(self, config, compile: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    self.config = config
    self.model = MultimodalModel(config)
    decay = [p for p in self.model.parameters() if p.ndim > 1]
    no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
    o = config.optim
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.0, betas=(o.b1, o.b2), eps=1e-8, fused=True)
    self.step_count = 0
    self.loss_fn = torch.compile(self._loss) if compile else self._loss

  def _loss(self, batch, clip_targets, step_targets):
    augment = self.config.augment if self.config.augment.enabled else None
    outputs = self.model(batch, augment)
    return compute_losses(outputs, batch, self.config, clip_targets, step_targets)

  def step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    a = self.config.augment
    self.model.train()
    clip_targets = step_targets = None
    if a.enabled and a.mixup_alpha > 0:
      batch, clip_targets, step_targets = mixup(batch, self.config.data.num_classes, a.mixup_alpha,
                                                sorted(self.config.data.modalities))
    self.optimizer.zero_grad(set_to_none=True)
    total, parts = self.loss_fn(batch, clip_targets, step_targets)
    total.backward()
    parts["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip_norm)
    lr = learning_rate(self.config, self.step_count)
    for group in self.optimizer.param_groups:
      group["lr"] = lr
    self.optimizer.step()
    self.step_count += 1
    return parts


def to_torch(batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
  return {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}   # copies: jax arrays are read-only


# --- flax <-> torch parameters ---------------------------------------------------

def _links(model: MultimodalModel):
  """[(flax paths, torch names, to_torch(flax arrays) -> arrays, to_flax(torch arrays) -> arrays)]."""
  hidden = model.config.model.hidden_dim
  same = lambda arrays: arrays
  transpose = lambda arrays: [a.T for a in arrays]
  links = []

  def dense(flax_prefix, torch_prefix):
    links.append(([(*flax_prefix, "kernel")], [f"{torch_prefix}.weight"], transpose, transpose))
    links.append(([(*flax_prefix, "bias")], [f"{torch_prefix}.bias"], same, same))

  def norm(flax_prefix, torch_prefix):
    links.append(([(*flax_prefix, "scale"), (*flax_prefix, "bias")],
                  [f"{torch_prefix}.weight", f"{torch_prefix}.bias"], same, same))

  for n in model.names:
    enc, layer = f"encoders.{n}", (f"{n}_encoder", "gru", "layer_0")
    norm((f"{n}_encoder", "input_norm"), f"{enc}.input_norm")
    dense((f"{n}_encoder", "merge_directions"), f"{enc}.merge_directions")
    both = lambda w, enc=enc: [f"{enc}.gru.{w}_l0", f"{enc}.gru.{w}_l0_reverse"]
    links += [   # flax stacks the directions; torch keeps [3H, ...] weights per direction
        ([(*layer, "input_kernel")], both("weight_ih"), lambda a: [a[0][:, 0].T, a[0][:, 1].T],
         lambda ts: [np.stack([w.T for w in ts], 1)]),
        ([(*layer, "input_bias")], both("bias_ih"), lambda a: list(a[0]), lambda ts: [np.stack(ts)]),
        ([(*layer, "hidden_kernel")], both("weight_hh"), lambda a: [w.T for w in a[0]],
         lambda ts: [np.stack([w.T for w in ts])]),
        # torch's b_hr, b_hz: folded into our input bias, so zero; b_hn is our hidden bias
        ([(*layer, "hidden_bias")], both("bias_hh"),
         lambda a: [np.concatenate([np.zeros(2 * hidden, np.float32), b]) for b in a[0]],
         lambda ts: [np.stack([b[2 * hidden:] for b in ts])]),
    ]
  for name in model.fusion:
    flax, block = ("fusion", name), f"fusion.{name}"
    for ln in ("norm_q", "norm_kv", "norm_mlp"):
      norm((*flax, ln), f"{block}.{ln}")
    dense((*flax, "mlp_in"), f"{block}.mlp_in")
    dense((*flax, "mlp_out"), f"{block}.mlp_out")
    att = (*flax, "attention")
    qkv = ("query", "key", "value")
    links += [   # flax: [H, heads, head_dim] kernels per q, k, v; torch: one [3H, H] in_proj
        ([(*att, p, "kernel") for p in qkv], [f"{block}.attention.in_proj_weight"],
         lambda a: [np.concatenate([w.reshape(w.shape[0], -1).T for w in a])],
         lambda ts: [w.T for w in np.split(ts[0], 3)]),
        ([(*att, p, "bias") for p in qkv], [f"{block}.attention.in_proj_bias"],
         lambda a: [np.concatenate([b.reshape(-1) for b in a])], lambda ts: np.split(ts[0], 3)),
        ([(*att, "out", "kernel")], [f"{block}.attention.out_proj.weight"],
         lambda a: [a[0].reshape(-1, a[0].shape[-1]).T], transpose),
        ([(*att, "out", "bias")], [f"{block}.attention.out_proj.bias"], same, same),
    ]
  for flax_head, torch_head in [("clip_head", "clip_head"), ("step_head", "step_head")] + [
      (f"{n}_decoder", f"decoders.{n}") for n in model.names]:
    dense((flax_head, "hidden"), f"{torch_head}.hidden")
    dense((flax_head, "out"), f"{torch_head}.out")
  return links


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return np.asarray(tree, np.float32)


def flax_to_torch(params: Mapping[str, Any], model: MultimodalModel) -> None:
  """Loads flax MultimodalModel params into `model` (in place)."""
  state = {}
  for flax_paths, torch_names, to_torch_fn, _ in _links(model):
    state.update(zip(torch_names, to_torch_fn([_get(params, p) for p in flax_paths])))
  if set(state) != set(model.state_dict()):
    raise KeyError(f"unmatched parameters: {sorted(set(state) ^ set(model.state_dict()))}")
  model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in state.items()})


def torch_grads_to_flax(model: MultimodalModel, params: Mapping[str, Any]) -> dict:
  """The torch gradients (after backward) in the layout and shapes of flax `params`."""
  grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
  out: dict = {}
  for flax_paths, torch_names, _, to_flax_fn in _links(model):
    for path, value in zip(flax_paths, to_flax_fn([grads[n] for n in torch_names])):
      node = out
      for key in path[:-1]:
        node = node.setdefault(key, {})
      node[path[-1]] = value.reshape(_get(params, path).shape)
  return out


def check_equivalence(config, batch: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, float]:
  """Runs the flax and the torch model on `batch` with the same parameters (no dropout or
  augmentation) and returns the largest differences of outputs, loss and gradients."""
  import jax   # pylint: disable=g-import-not-at-top
  from multimodal_gru import objective   # pylint: disable=g-import-not-at-top
  from multimodal_gru.models.model import build_model   # pylint: disable=g-import-not-at-top

  flax_model = build_model(config)
  params = flax_model.init(jax.random.key(seed), batch, train=False)["params"]

  def loss_fn(params):
    outputs = flax_model.apply({"params": params}, batch, train=False)
    return objective.compute_losses(outputs, batch, config)[0], outputs

  (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  model = MultimodalModel(config)
  flax_to_torch(params, model)
  model.eval()
  torch_batch = to_torch(batch)
  torch_outputs = model(torch_batch)
  torch_loss, _ = compute_losses(torch_outputs, torch_batch, config)
  torch_loss.backward()
  torch_grads = torch_grads_to_flax(model, params)

  def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))

  diffs = {"logits": max_diff(outputs["logits"], torch_outputs["logits"]),
           "step_logits": max_diff(outputs["step_logits"], torch_outputs["step_logits"]),
           "loss": abs(float(loss) - torch_loss.item())}
  if "recon" in outputs:
    diffs["recon"] = max(max_diff(outputs["recon"][n], torch_outputs["recon"][n]) for n in model.names)
  # Relative to each leaf's largest entry, floored at 1e-3 of the largest gradient: some
  # gradients are exactly 0 in exact arithmetic (attention key biases) and only noise here.
  scale = 1e-3 * max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads))
  relative = jax.tree.map(
      lambda g, t: float(np.max(np.abs(np.asarray(g) - t)) / max(float(np.max(np.abs(g))), scale)),
      grads, torch_grads)
  diffs["grad_relative"] = max(jax.tree.leaves(relative))
  return diffs
