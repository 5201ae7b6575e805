"""compress()'s defaults, in one place: the stages read them from here."""

import numpy as np

from tf_vib.registry import FUSED_LSTM_UNIT_MULTIPLE

__all__ = ["DEFAULT_MAX_DROP", "DEFAULT_THRESHOLDS", "DEFAULT_WARMUP_EPOCHS", "KL_REFERENCE_WIDTH", "KL_SAMPLES_CAP",
           "STATE_GATES", "UNIT_MULTIPLE", "WARMUP_DIVISOR", "default_kl_factor", "default_warmup_epochs",
           "short_warmup", "too_few_updates"]

#: The gates compress() masks by default: the LSTM output gate and the GRU candidate, i.e. a
#: mask on the hidden state. Both fold exactly into the plain layer (no gap between the
#: trained masked model and the stripped one) and train faster than masks on every gate.
STATE_GATES = {"lstm": "o", "gru": "h", "simple_rnn": "h"}

#: The default tolerance: ``max_accuracy_drop`` (0.5 point), and for any other metric the
#: same fraction of the baseline's value (0.5% of its validation loss, say).
DEFAULT_MAX_DROP = 0.005

#: log_alpha thresholds tried when choosing the model: 0 prunes the most.
DEFAULT_THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)

#: compress()'s default ``unit_multiple``: TFLite's fused LSTM kernel runs a layer whose units
#: are a multiple of 4 faster than one a unit or more above it (measured in
#: docs/deployment.md), so a chosen LSTM of 13 units is worth trimming to 12 when accuracy
#: allows. What is not trimmed, the converter pads to the same multiple in the float modes
#: (``AUTO_UNIT_MULTIPLE``).
UNIT_MULTIPLE = FUSED_LSTM_UNIT_MULTIPLE

#: The training-set size above which the default KL weight stops shrinking.
KL_SAMPLES_CAP = 256

#: The layer width above which the default KL weight shrinks in proportion.
KL_REFERENCE_WIDTH = 128


def default_kl_factor(n_train, width=KL_REFERENCE_WIDTH):
    """The default KL weight: ``1 / min(n_train, 256) * min(1, 128 / width)``.

    ``1 / n_train`` is the per-sample ELBO weighting. Over an epoch it pushes the masks by
    the same total whatever the data size, while the data term's push grows with
    ``n_train``: on larger sets the masks stop well short of what the accuracy allows.
    Capping the sample count at 256 keeps the pruning going there and leaves small sets as
    they were.

    ``width`` is the widest masked layer (units, or input features of a recurrent layer).
    The KL gradient on each mask does not depend on the width, while each unit's share of
    the data term shrinks as ``1 / width``, and Adam moves every mask whose gradient the KL
    dominates at the same pace: in a wide layer every mask would cross the threshold
    together. Scaling the weight by ``128 / width`` keeps a unit of a wide layer in the
    balance a unit of a 128-unit layer has. The runs behind both terms are in
    docs/design.md ("Choosing the compressed model").
    """
    return 1.0 / min(int(n_train), KL_SAMPLES_CAP) * min(1.0, KL_REFERENCE_WIDTH / max(int(width), 1))


#: The KL warm-up of a long run (15 VIB epochs or more): the ramp the benchmarks' defaults
#: were tuned with.
DEFAULT_WARMUP_EPOCHS = 5

#: A shorter run's default warm-up is ``epochs // WARMUP_DIVISOR``: the KL weight is at
#: ``kl_factor`` for the last two thirds of the VIB epochs.
WARMUP_DIVISOR = 3


def default_warmup_epochs(epochs):
    """compress()'s KL warm-up when ``warmup_epochs`` is not given: ``min(5, epochs // 3)``.

    5 epochs from 15 VIB epochs on (what it always was there); below, a third of them (8
    epochs: 2; 2 or fewer: 0, the full KL weight from the first batch). A fixed 5-epoch ramp
    left an 8-epoch run 3 epochs at the full weight, and a run of 5 or fewer none: the masks
    barely moved and nothing was pruned.
    """
    return min(DEFAULT_WARMUP_EPOCHS, int(epochs) // WARMUP_DIVISOR)


def short_warmup(epochs, warmup_epochs, steps):
    """The warning of a KL warm-up that outlasts the VIB training (``steps`` batches an
    epoch), as a one-item list (empty when the weight reaches ``kl_factor`` before the end)."""
    if epochs == 0 or warmup_epochs < epochs:
        return []
    peak = (epochs * steps - 1) / (warmup_epochs * steps)  # VIBSchedule.kl_weight at the last batch
    return [f"warmup_epochs={warmup_epochs} >= epochs={epochs}: the KL weight ramps over {warmup_epochs} "
            f"epochs but VIB training stops after {epochs}, so it never reaches kl_factor (it peaks at "
            f"{100 * peak:.0f}% of it, on the last batch) and few or no units will be pruned; pass "
            f"warmup_epochs={default_warmup_epochs(epochs)} (or leave it unset: a third of the epochs, "
            f"at most 5), or more epochs"]


def too_few_updates(epochs, steps, mask_learning_rate):
    """The warning of a VIB training too short for any mask to be pruned, as a list.

    Adam moves a variable by about its learning rate per update at most, and a mask starts
    at mu 1, log_sigma2 -9 (log_alpha -9): log_alpha reaches 0 only once mu is near 0, after
    about ``1 / mask_learning_rate`` updates (0.98 / rate with log_sigma2 rising as fast).
    """
    updates = epochs * steps
    if epochs == 0 or updates * mask_learning_rate >= 1.0:
        return []
    needed = int(np.ceil(1.0 / (mask_learning_rate * steps)))
    return [f"the VIB masks get {updates} updates ({epochs} epochs x {steps} batches) at "
            f"mask_learning_rate={mask_learning_rate:g}; Adam moves a mask by about its rate per update, "
            f"so none can go from its start (mean 1, log_alpha -9) to a keep threshold, which takes about "
            f"{int(np.ceil(1.0 / mask_learning_rate))} updates: nothing will be pruned by the masks. Pass "
            f"epochs >= {needed} (more to leave the masks time to choose), a smaller batch_size or a higher "
            f"mask_learning_rate"]
