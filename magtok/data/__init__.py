"""Video / image IO (PyAV, Pillow), folder datasets, token files and token shards.

    from magtok.data import read_video, write_video, VideoFolderDataset, save_tokens, load_tokens
"""

from magtok.data.dataset import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, KindBatchSampler, MediaItem,
                                 VideoFolderDataset, build_training_datasets, scan_media)
from magtok.data.samples import (SAMPLE_IMAGE_NAMES, SAMPLE_VIDEO_NAMES, SampleFolder,
                                 make_sample_folder, sample_images, sample_videos)
from magtok.data.shards import ShardReader, ShardWriter, TokenSequenceDataset
from magtok.data.tokens import (TokenFile, TokenFileError, TokenMeta, bits_for, decode_tokens,
                                encode_tokens, load_tokens, pack_bits, save_tokens,
                                tokenizer_fingerprint, unpack_bits)
from magtok.data.video import (VideoInfo, VideoReadError, center_crop, frame_indices,
                               iter_video_chunks, probe_video, random_crop, read_image, read_video,
                               resize_and_crop, resize_short_side, resize_to_cover, to_tensor,
                               to_uint8, write_side_by_side, write_video)

__all__ = [
    "IMAGE_EXTENSIONS", "KindBatchSampler", "MediaItem", "SAMPLE_IMAGE_NAMES", "SAMPLE_VIDEO_NAMES",
    "SampleFolder", "ShardReader", "ShardWriter", "TokenFile", "TokenFileError", "TokenMeta",
    "TokenSequenceDataset", "VIDEO_EXTENSIONS", "VideoFolderDataset", "VideoInfo", "VideoReadError",
    "bits_for", "build_training_datasets", "center_crop", "decode_tokens", "encode_tokens", "frame_indices",
    "iter_video_chunks", "load_tokens", "make_sample_folder", "pack_bits", "probe_video",
    "random_crop", "read_image", "read_video", "resize_and_crop", "resize_short_side",
    "resize_to_cover", "sample_images", "sample_videos", "save_tokens", "scan_media", "to_tensor",
    "to_uint8", "tokenizer_fingerprint", "unpack_bits", "write_side_by_side", "write_video",
]
