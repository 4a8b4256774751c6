"""The tokenization pipeline as a library: one call per job, typed options and results.

    from magtok.pipeline import (ReadOptions, ComputeOptions, DatasetOptions, load_model, tokenize_file,
                                 tokenize_array, detokenize, reconstruct, build_manifest, tokenize_dataset)

    r = tokenize_file("clip.mp4", "runs/demo/model", ReadOptions(short_side=128))     # TokenizeResult
    r.save("clip.tokens")
    detokenize("clip.tokens", "recon.mp4")                                          # DetokenizeResult
    write_manifest(build_manifest("videos/", workers=8), "manifest.parquet")
    report = tokenize_dataset("manifest.parquet", "shards/", "runs/demo/model",
                              ReadOptions(size=(128, 128), max_frames=17), options=DatasetOptions(batch_size=8))

Layers: model (resolver), geometry (resize / crop planner), reading (options, sources, chunks), writer
(streaming H.264 writer), api (single files), manifest, dataset (+ ray_engine), sequences (second stage).
The command line (``magtok.cli``) is a thin layer over these.
"""

from magtok.pipeline.api import (DetokenizeResult, ReconstructResult, TokenizeResult, detokenize, encode_source,
                                 reconstruct, tokenize_array, tokenize_file)
from magtok.pipeline.dataset import DatasetOptions, DatasetReport, WorkItem, plan_work, tokenize_dataset
from magtok.pipeline.geometry import Geometry, plan_geometry
from magtok.pipeline.manifest import build_manifest, list_inputs, read_manifest, write_manifest
from magtok.pipeline.model import Model, ModelError, ModelNotFoundError, find_model, load_model, resolve_model
from magtok.pipeline.reading import ComputeOptions, ReadOptions, Source, open_source
from magtok.pipeline.sequences import PackedTokenDataset, collate_tokens, flatten_codes, pack_sequences
from magtok.pipeline.writer import OutputError, VideoSink

__all__ = [
    "ComputeOptions", "DatasetOptions", "DatasetReport", "DetokenizeResult", "Geometry", "Model", "ModelError",
    "ModelNotFoundError", "OutputError", "PackedTokenDataset", "ReadOptions", "ReconstructResult", "Source",
    "TokenizeResult", "VideoSink", "WorkItem", "build_manifest", "collate_tokens", "detokenize", "encode_source",
    "find_model", "flatten_codes", "list_inputs", "load_model", "open_source", "pack_sequences", "plan_geometry",
    "plan_work", "read_manifest", "reconstruct", "resolve_model", "tokenize_array", "tokenize_dataset",
    "tokenize_file", "write_manifest",
]
