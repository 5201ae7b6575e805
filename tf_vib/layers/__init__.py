"""The VIB layers: masks on input features, Dense units and recurrent gates (LSTM, GRU, SimpleRNN)."""

from tf_vib.layers.base import VIBLayerMixin, is_vib_layer
from tf_vib.layers.feature_mask import FeatureMask
from tf_vib.layers.low_rank_lstm import LowRankLSTMCell
from tf_vib.layers.select_features import SelectFeatures
from tf_vib.layers.time_mask import SelectFrames, TimeMask
from tf_vib.layers.vib_gru import VIBGRUCell
from tf_vib.layers.vib_lstm import VIBLSTMCell
from tf_vib.layers.vib_mask import GaussianMask, MaskSettings
from tf_vib.layers.vib_rnn import VIBRNN
from tf_vib.layers.vib_simple_rnn import VIBSimpleRNNCell

__all__ = [
    "FeatureMask",
    "GaussianMask",
    "LowRankLSTMCell",
    "MaskSettings",
    "SelectFeatures",
    "SelectFrames",
    "TimeMask",
    "VIBGRUCell",
    "VIBLSTMCell",
    "VIBSimpleRNNCell",
    "VIBLayerMixin",
    "VIBRNN",
    "is_vib_layer",
]
