"""Optional native kernels. :mod:`magtok.kernels.winograd`: Winograd F(4x4, 3x3) causal 3D convolution."""

from magtok.kernels.winograd import conv_algorithm, get_conv_algorithm, set_conv_algorithm

__all__ = ["conv_algorithm", "get_conv_algorithm", "set_conv_algorithm"]
