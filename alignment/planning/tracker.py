"""The planner's memory count: every tensor storage the ops of a step create and free, on fake or real tensors."""

from __future__ import annotations

import contextlib
import weakref

import torch


class StorageTracker:
    """A TorchDispatchMode-based count of the bytes of every tensor storage the ops create (fake or real),
    freed when the storage is (a weak reference's finalizer): ``current`` and ``peak`` since it started, and
    ``phase(name)`` records the peak of a block. Module hooks are not used (MemTracker's fail on frozen
    parameters and on a module called twice, as an anchor shared by two names is).

    ``transient_overall``: the most allocated at once apart from the parameters' gradients (counted as they
    first appear, through ``track_gradients``): what a rank holds in full under ZeRO-3, where each gradient
    is reduced and partitioned as it forms.

    A boolean mask computed from real token ids that indexes a fake tensor (``hidden[mask]``, as trl's fused
    head does) is replaced by its positions, so the output's size is known without reading fake data; a
    number read on the host from a fake tensor (a logged metric's ``.item()``) reads 1; a large tensor made from a
    shape alone (a workspace, an accumulator) is made fake, so planning a long sequence costs no memory.

    Each storage is counted under a label (``label``, set by the caller: "activations" by default, the phase's
    name or "kernel_workspace" inside the fused op) and moves to "gradients" when it becomes a parameter's
    gradient; ``at_peak`` is the live bytes per label at the moment of the overall peak, so its values sum to
    ``overall`` exactly (the breakdown a plan prints is taken at the peak itself)."""

    def __init__(self, *known):
        """``known``: modules and optimizers whose tensors exist already (their storages are not counted when an
        op returns a view of them, as ``weight.t()`` does)."""
        self.current = self.peak = self.overall = 0  # peak: of the current phase; overall: since the start
        self.grad_bytes = self.transient_overall = 0
        self.label = "activations"
        self.live: dict[str, int] = {}
        self.at_peak: dict[str, int] = {}
        self.peak_phase: str | None = None
        self._phase: str | None = None
        self.marks: dict[str, int] = {}
        self.transient_marks: dict[str, int] = {}  # transient_overall at the end of each phase
        self._known = known
        self._seen = None
        self._hooks: list = []

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.weak import WeakIdKeyDictionary

        tracker, self._seen = self, WeakIdKeyDictionary()
        fake_mode = None
        for tensor in tensors_of(self._known):
            self._seen[tensor.untyped_storage()] = [0, None]
            fake_mode = fake_mode or getattr(tensor, "fake_mode", None)

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default and _fake(args[0]):
                    return _ONE[args[0].dtype.is_floating_point] if args[0].dtype != torch.bool else True
                if func is torch.ops.aten.index.Tensor:
                    args = (args[0], _positions(args[1]))
                out = None
                if fake_mode is not None and _large_factory(func, args):
                    with fake_mode:  # a workspace made from a shape alone: fake too (no real memory)
                        out = func(*args, **(kwargs or {}))
                elif fake_mode is not None and _all_real(args, kwargs):
                    out = _large_from_real(func, args, kwargs, fake_mode)
                if out is None:
                    out = func(*args, **(kwargs or {}))
                if not (kwargs and "out" in kwargs):  # an out= op writes into tensors that exist already (under
                    torch.utils._pytree.tree_map_only(torch.Tensor, tracker._add, out)  # fake tensors: new wrappers)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for hook in self._hooks:
            hook.remove()

    def track_gradients(self, parameters) -> None:
        """Count each trainable parameter's gradient as it first appears (``grad_bytes``)."""

        def seen(param):
            if not getattr(param, "_plan_grad_counted", False):
                param._plan_grad_counted = True
                self.grad_bytes += param.grad.numel() * param.grad.element_size()
                self._relabel(param.grad.untyped_storage(), "gradients")

        self._hooks += [p.register_post_accumulate_grad_hook(seen) for p in parameters if p.requires_grad]

    def _add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage in self._seen:
            return
        size = storage.nbytes()
        cell = [size, self.label]  # [bytes, label]: the label may change (a gradient)
        self._seen[storage] = cell
        self.current += size
        self.live[self.label] = self.live.get(self.label, 0) + size
        self.peak = max(self.peak, self.current)
        if self.current > self.overall:
            self.overall = self.current
            self.at_peak = {k: v for k, v in self.live.items() if v}
            self.peak_phase = self._phase
        self.transient_overall = max(self.transient_overall, self.current - self.grad_bytes)
        weakref.finalize(storage, self._free, cell)

    def _relabel(self, storage, label: str) -> None:
        cell = self._seen.get(storage) if self._seen is not None else None
        if cell is None or cell[1] is None or cell[1] == label:
            return
        self.live[cell[1]] -= cell[0]
        self.live[label] = self.live.get(label, 0) + cell[0]
        cell[1] = label

    def _free(self, cell: list) -> None:
        self.current -= cell[0]
        self.live[cell[1]] -= cell[0]

    @contextlib.contextmanager
    def labelled(self, label: str):
        """Within the block, new storages count under ``label``."""
        before, self.label = self.label, label
        try:
            yield
        finally:
            self.label = before

    def phase(self, name: str):
        """A context: the peak above the start of the block, recorded as ``marks[name]``."""

        @contextlib.contextmanager
        def block():
            start, self.peak = self.current, self.current
            before, label = self._phase, self.label
            self._phase, self.label = name, PHASE_LABELS.get(name, name)
            try:
                yield
            finally:
                self._phase, self.label = before, label
                self.marks[name] = self.peak - start
                self.transient_marks[name] = self.transient_overall
                self.peak = max(self.peak, self.current)

        return block()


#: what a storage made in each phase counts as in the breakdown at the peak
PHASE_LABELS = {"forward": "activations", "backward": "backward_temporaries", "optimizer": "optimizer_temporaries",
                "precompute": "precompute_activations"}  # fmt: skip
_ONE = {True: 1.0, False: 1}
_FACTORIES = {torch.ops.aten.empty.memory_format, torch.ops.aten.zeros.default, torch.ops.aten.ones.default,
              torch.ops.aten.full.default, torch.ops.aten.empty_strided.default}  # fmt: skip
LARGE = 1 << 18  # elements: a factory this large is a workspace, never data the step reads back on the host


def _large_factory(func, args) -> bool:
    """A tensor made from a shape alone (torch.zeros(shape), torch.empty(n)) of at least LARGE elements."""
    if func not in _FACTORIES or not args or not isinstance(args[0], (list, tuple)):
        return False
    numel = 1
    for size in args[0]:
        numel *= int(size)
    return numel >= LARGE


def _all_real(args, kwargs) -> bool:
    """Tensors among the arguments, none of them fake (an op on real token ids or masks)."""
    leaves = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    return bool(leaves) and not any(_fake(t) for t in leaves)


def _large_from_real(func, args, kwargs, fake_mode):
    """The op's fake output when it is a large [.., T, T] square (at least LARGE elements) far larger than its
    inputs (an outer product, a broadcast), else None. A mask transformers builds from the real [N, T] attention mask
    ([N, 1, T, T] for sdpa and eager, in a trainer that does not avoid it) is then fake: counted, never allocated
    on this machine. Values the step reads back on the host (a mask's own copy, its sums) stay real."""
    if func in _FACTORIES or func is torch.ops.aten._local_scalar_dense.default:
        return None
    try:
        with fake_mode:
            out = func(*args, **(kwargs or {}))
    except Exception:  # data-dependent output shapes (nonzero, masked indexing): run it for real
        return None
    outs = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    inputs = [t.numel() for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    square = [t for t in outs if t.dim() >= 2 and t.shape[-1] == t.shape[-2]]  # a mask's [.., T, T]
    big = [t.numel() for t in square if t.numel() >= LARGE and t.numel() >= 8 * max(inputs)]
    return out if big else None


def _fake(t) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _positions(indices: list) -> list:
    """aten.index's indices with each real boolean mask replaced by its positions (one long tensor per masked
    dimension)."""
    from torch._subclasses.fake_tensor import FakeTensor

    out = []
    for index in indices:
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool and not isinstance(index, FakeTensor):
            out.extend(index.nonzero(as_tuple=True))
        else:
            out.append(index)
    return out


def tensors_of(owners):
    """The tensors of modules (parameters, buffers, gradients), optimizers (their states) and tensors."""
    for owner in owners:
        if isinstance(owner, torch.Tensor):
            yield owner
        elif isinstance(owner, torch.nn.Module):
            for param in owner.parameters():
                yield param
                if param.grad is not None:
                    yield param.grad
            yield from owner.buffers()
        elif isinstance(owner, torch.optim.Optimizer):
            for state in owner.state.values():
                yield from (v for v in state.values() if torch.is_tensor(v))


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
