"""Encoders of the paper's Appendix A: ResNet (images), VDCNN (text), LSTM (tabular)."""

from proto_tf.encoders.lstm import TabularLSTM
from proto_tf.encoders.resnet import ResidualBlock, ResNet
from proto_tf.encoders.vdcnn import VDCNN, KMaxPooling

__all__ = ["KMaxPooling", "ResNet", "ResidualBlock", "TabularLSTM", "VDCNN"]
