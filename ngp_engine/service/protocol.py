"""The engine service protocol: JSON lines between the Blender add-on and `ngp_engine serve`.

Standard library only: the add-on imports this module inside Blender.

Every line is one JSON object with a `"type"` and the fields of one message dataclass.
The client sends *requests* on the engine's stdin; the engine answers with *events* on its
stdout (and nothing else goes to stdout; logs go to stderr). Bulk data never travels in a
message: datasets, checkpoints, meshes and passes are files in the run folder, and
messages carry their paths.

    client                          engine
    hello {protocol}          ->
                              <-    ready {engine_version, protocol, device, backends, devices, backend, ...}
    train {mode, data, run_dir, ...}
                              <-    artifact {kind: "config", info: {device, device_name, backend, mlp_precision, processes}}
                              <-    log / progress (<= ~10 per second) / artifact {checkpoint}
    preview {camera, passes, resolution}
                              <-    artifact {kind: "pass", path, info: {pass, ...}} per pass
    stop                      ->
                              <-    artifact {checkpoint}, done {summary}
    export_mesh {resolution, box?} ->
                              <-    artifact {kind: "mesh", path} (PLY, then OBJ)
    status                    ->
                              <-    state {job, mode, step, ...}
    poses {input, out, ...}   ->    (camera poses from photos, a video or a COLMAP model)
                              <-    poses_progress {stage, done, total, registered} ...
                              <-    artifact {kind: "dataset", path}, done {summary}
    shutdown                  ->    (the engine stops any job, saves it and exits 0)
    file_info {path}          ->
                              <-    file_state {exists, size, sha256, part_size, part_sha256}
    put_file {path, offset, data, last, sha256?} ... (no answer until `last`)
                              <-    file_state (the file complete, checked, renamed into place)
    get_file {path, offset}   ->
                              <-    file_chunk {offset, data, size, last, sha256 on the last} ...

Files travel in the protocol itself when the engine is elsewhere (over SSH, see remote.py):
base64 chunks of at most FILE_CHUNK_BYTES, a SHA-256 over the whole file, resumable at any
offset (an upload grows a hidden `.<name>.part` beside its target and is renamed into place
only when its checksum matches). One channel means one login, one place that checks paths,
and the same code for a local engine; the cost is a third more bytes than scp/sftp, small
beside the minutes a dataset trains. An engine serving with `--root DIR` takes every path
in a request relative to DIR, refuses one that escapes it (`..`, absolute, a symlink out)
and names its own files relative to DIR.

Any request may carry an `id` (a string of the client's choosing); events that answer a
request repeat it in `request`. A line that is not a valid request gets an `error` event
naming what is wrong, and the engine keeps serving.

Parsing is strict: unknown `type`, unknown field, missing field, wrong JSON type, NaN or
infinity are all `ProtocolError`s whose message names the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..formats.camera import Camera
from ..schema import check, clip
from .message import MAX_LINE_BYTES, Message, ProtocolError, parse  # noqa: F401 - re-exported

PROTOCOL_VERSION = 6                 # 2: export_mesh takes a box; 3: file transfer;
                                     # 4: train takes processes and gradient_sync;
                                     # 5: train takes backend and mlp_precision;
                                     # 6: mlp_precision "auto", and the config artifact
                                     #    says the precision resolved
PASSES = ("rgb", "depth", "opacity", "normals")
FILE_CHUNK_BYTES = 1 << 18          # raw bytes per file message (base64: ~350 KB, under MAX_LINE_BYTES)


# ---------------------------------------------------------------------------------------------
# Requests (client -> engine)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello(Message):
    """First request: the engine answers `ready` (or an `error` on a protocol mismatch)."""

    type: ClassVar[str] = "hello"
    protocol: int
    client: str = ""
    id: str | None = None


@dataclass(frozen=True)
class Train(Message):
    """Start a training job. `data`: a NeRF dataset folder or transforms json (nerf), an image
    file (image), a mesh file (sdf). `run_dir`: where every output goes (created). `config`:
    a full config document of the mode (see config.py), or `preset`, or neither (the mode's
    default preset). Budget: `steps` or `seconds`, or neither to train until `stop`.
    `resume`: a checkpoint to continue. A checkpoint is also written every
    `checkpoint_every` seconds, so a killed engine loses little. `processes` > 1 trains
    data-parallel: the engine starts that many processes in all (one per GPU on CUDA; on
    a CPU they share its cores) that split each step's batch and sum their gradients
    (hash tables by `gradient_sync`: "dense" or "rows"; see ngp_engine/distributed.py).
    `backend` (the hash grid's and kernels' implementation, as the CLI's --backend) and
    `mlp_precision` (as --mlp-precision) change those fields of the config or preset; a
    resumed run may change its backend only."""

    type: ClassVar[str] = "train"
    mode: str                          # a registered task (ngp_engine.tasks); checked on `train`
    data: str
    run_dir: str
    config: dict[str, Any] | None = None
    preset: str | None = None
    steps: int | None = None
    seconds: float | None = None
    resume: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    checkpoint_every: float = 60.0
    processes: int = 1
    gradient_sync: Literal["dense", "rows"] = "dense"
    backend: Literal["auto", "torch", "cpu", "triton", "tcnn"] | None = None
    mlp_precision: Literal["auto", "float32", "bfloat16"] | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        check(bool(self.mode), "mode", self.mode, "must name a training mode")
        check(1 <= self.processes <= 64, "processes", self.processes, "must be in 1..64")
        check(bool(self.data), "data", self.data, "must name a file or folder")
        check(bool(self.run_dir), "run_dir", self.run_dir, "must name a folder")
        check(self.config is None or self.preset is None, "preset", self.preset,
               "cannot be given together with config")
        check(self.steps is None or self.seconds is None, "seconds", self.seconds,
               "cannot be given together with steps")
        check(self.steps is None or self.steps >= 0, "steps", self.steps, "must be >= 0")
        check(self.seconds is None or self.seconds >= 0, "seconds", self.seconds, "must be >= 0")
        check(self.checkpoint_every > 0, "checkpoint_every", self.checkpoint_every, "must be > 0")


@dataclass(frozen=True)
class Stop(Message):
    """End the running job at the next step boundary; it saves a checkpoint and sends `done`."""

    type: ClassVar[str] = "stop"
    id: str | None = None


@dataclass(frozen=True)
class Preview(Message):
    """Render the current model (between training steps while a job runs): one `artifact`
    of kind "pass" per pass, a float32 .npy (a viewable .png lies beside it). `resolution`
    [width, height] rescales the camera's image (default: the camera's w x h). NeRF needs a
    camera; an image field ignores it."""

    type: ClassVar[str] = "preview"
    camera: Camera | None = None
    passes: list[str] = field(default_factory=lambda: ["rgb"])
    resolution: list[int] | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        check(len(self.passes) > 0, "passes", self.passes, "must name at least one pass")
        for p in self.passes:
            check(p in PASSES, "passes", clip(p), f"is not one of {list(PASSES)}")
        if self.resolution is not None:
            check(len(self.resolution) == 2 and all(1 <= v <= 8192 for v in self.resolution),
                   "resolution", self.resolution, "must be [width, height], each in 1..8192")


@dataclass(frozen=True)
class ExportMesh(Message):
    """Marching-cubes mesh of the current model (PLY with colours + OBJ, world units)."""

    type: ClassVar[str] = "export_mesh"
    resolution: int = 256
    threshold: float | None = None
    box: list[list[float]] | None = None     # world [lo, hi] to cut the mesh to (NeRF); None: the unit cube
    id: str | None = None

    def __post_init__(self) -> None:
        check(8 <= self.resolution <= 1024, "resolution", self.resolution, "must be in 8..1024")
        if self.box is not None:
            ok = (isinstance(self.box, (list, tuple)) and len(self.box) == 2
                  and all(isinstance(b, (list, tuple)) and len(b) == 3
                          and all(isinstance(x, (int, float)) and math.isfinite(x) for x in b) for b in self.box)
                  and all(lo < hi for lo, hi in zip(*self.box)))
            check(ok, "box", self.box, "must be [lo, hi], each 3 finite numbers, lo below hi")


@dataclass(frozen=True)
class Poses(Message):
    """Find camera poses (structure from motion, `ngp_engine.poses`) and write a dataset
    folder that `train` reads as it is. `input`: a folder of photos, a video file, or a
    COLMAP model folder; `out`: the dataset folder to create (it appears only when
    complete). `sfm_size`: long side of the copies SfM reads; `image_size`: long side of the
    dataset's images (default 1600; never upscaled). Progress comes as `poses_progress`, the end as `artifact` {kind "dataset"}
    and `done`; `stop` cancels (nothing is left on disk). While it runs, `train`,
    `preview` and `export_mesh` are refused."""

    type: ClassVar[str] = "poses"
    input: str
    out: str
    matching: Literal["auto", "exhaustive", "sequential"] = "auto"
    camera_model: Literal["SIMPLE_RADIAL", "OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "RADIAL",
                          "OPENCV_FISHEYE"] = "SIMPLE_RADIAL"
    single_camera: bool = True
    sfm_size: int = 1600
    image_size: int | None = None
    video_frames: int = 100
    overwrite: bool = False
    id: str | None = None

    def __post_init__(self) -> None:
        check(bool(self.input), "input", self.input, "must name a folder or a video file")
        check(bool(self.out), "out", self.out, "must name a folder")
        check(64 <= self.sfm_size <= 8192, "sfm_size", self.sfm_size, "must be in 64..8192")
        check(self.image_size is None or 16 <= self.image_size <= 16384, "image_size",
              self.image_size, "must be in 16..16384")
        check(3 <= self.video_frames <= 2000, "video_frames", self.video_frames, "must be in 3..2000")


@dataclass(frozen=True)
class Status(Message):
    """Ask for a `state` event."""

    type: ClassVar[str] = "status"
    id: str | None = None


@dataclass(frozen=True)
class Shutdown(Message):
    """Stop any job (saving its checkpoint) and exit."""

    type: ClassVar[str] = "shutdown"
    id: str | None = None


@dataclass(frozen=True)
class FileInfo(Message):
    """Ask what is at `path` (a `file_state` answers): size and SHA-256 of the file, and of
    an unfinished upload of it."""

    type: ClassVar[str] = "file_info"
    path: str
    id: str | None = None

    def __post_init__(self) -> None:
        check(bool(self.path), "path", self.path, "must name a file")


@dataclass(frozen=True)
class PutFile(Message):
    """One chunk of an upload to `path`: `data` (base64, at most FILE_CHUNK_BYTES) goes at
    `offset` of the unfinished file, which must hold exactly `offset` bytes (offset 0 starts
    over). Chunks are not answered, except by an `error`; the `last` one carries the SHA-256
    of the whole file, and when it matches the file takes its name (answered by `file_state`)."""

    type: ClassVar[str] = "put_file"
    path: str
    offset: int
    data: str
    last: bool = False
    sha256: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        check(bool(self.path), "path", self.path, "must name a file")
        check(self.offset >= 0, "offset", self.offset, "must be >= 0")
        check(not self.last or (isinstance(self.sha256, str) and len(self.sha256) == 64), "sha256",
              self.sha256, "must be the file's 64-digit SHA-256 on the last chunk")


@dataclass(frozen=True)
class GetFile(Message):
    """Download `path` from `offset` on: `file_chunk` events, the last with the SHA-256 of
    the whole file."""

    type: ClassVar[str] = "get_file"
    path: str
    offset: int = 0
    id: str | None = None

    def __post_init__(self) -> None:
        check(bool(self.path), "path", self.path, "must name a file")
        check(self.offset >= 0, "offset", self.offset, "must be >= 0")


# ---------------------------------------------------------------------------------------------
# Events (engine -> client)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ready(Message):
    """Answer to `hello`: what this engine is and can do."""

    type: ClassVar[str] = "ready"
    engine_version: str
    protocol: int
    device: str                        # the device "auto" picks on this machine
    backends: list[str]                # hash-grid backends usable on that device
    modes: list[str]                   # training modes this engine implements
    pid: int
    python: str
    torch: str
    request: str | None = None
    devices: dict[str, str] = field(default_factory=dict)   # device type -> name, those found
    backend: str = ""                  # the hash-grid backend "auto" uses on `device`


@dataclass(frozen=True)
class Progress(Message):
    """Training progress of the running job (sent at most ~10 times per second)."""

    type: ClassVar[str] = "progress"
    mode: str
    step: int
    seconds: float                     # training time so far (previews and saves excluded)
    loss: float
    psnr: float | None = None          # training PSNR of the last batch
    fraction: float | None = None      # of the budget, None when training until `stop`
    eta_seconds: float | None = None
    samples_per_ray: float | None = None
    rays_per_second: float | None = None
    request: str | None = None


@dataclass(frozen=True)
class PosesProgress(Message):
    """Progress of a running `poses` job: the stage ("reading", "features", "matching",
    "mapping", "writing"), `done` of `total` in it, images registered so far."""

    type: ClassVar[str] = "poses_progress"
    stage: str
    done: int
    total: int
    registered: int = 0
    message: str = ""
    request: str | None = None


@dataclass(frozen=True)
class Artifact(Message):
    """A file the engine wrote in the run folder (complete: written atomically); kind
    "dataset" is the folder a `poses` job wrote."""

    type: ClassVar[str] = "artifact"
    kind: Literal["checkpoint", "mesh", "pass", "metrics", "config", "dataset"]
    path: str
    info: dict[str, Any] = field(default_factory=dict)
    request: str | None = None


@dataclass(frozen=True)
class Log(Message):
    type: ClassVar[str] = "log"
    level: Literal["debug", "info", "warning", "error"]
    message: str


@dataclass(frozen=True)
class Error(Message):
    """A request failed (the engine keeps serving). `detail` holds a traceback for engine
    bugs and is empty for user mistakes, whose `message` is one line naming the problem."""

    type: ClassVar[str] = "error"
    message: str
    detail: str = ""
    request: str | None = None


@dataclass(frozen=True)
class Done(Message):
    """A job ended: for training `summary` has steps, seconds, stopped, run_dir, checkpoint,
    ...; for `poses` it has job "poses", dataset, n_images, n_registered, ..."""

    type: ClassVar[str] = "done"
    summary: dict[str, Any]
    request: str | None = None


@dataclass(frozen=True)
class State(Message):
    """Answer to `status`."""

    type: ClassVar[str] = "state"
    job: Literal["idle", "training", "posing", "finished", "stopped", "failed"]
    mode: str | None = None
    step: int = 0
    seconds: float = 0.0
    run_dir: str | None = None
    request: str | None = None


@dataclass(frozen=True)
class FileState(Message):
    """What is at `path`: answers `file_info` and the last chunk of a `put_file`."""

    type: ClassVar[str] = "file_state"
    path: str
    exists: bool
    size: int = 0
    sha256: str = ""
    part_size: int = 0                 # bytes of an unfinished upload (0: none)
    part_sha256: str = ""
    request: str | None = None


@dataclass(frozen=True)
class FileChunk(Message):
    """One chunk of a `get_file` download: `data` (base64) from `offset` of a file of `size`
    bytes; the `last` chunk carries the SHA-256 of the whole file."""

    type: ClassVar[str] = "file_chunk"
    path: str
    offset: int
    data: str
    size: int
    last: bool = False
    sha256: str = ""
    request: str | None = None


REQUESTS: dict[str, type[Message]] = {c.type: c for c in (Hello, Train, Stop, Preview, ExportMesh,
                                                          Poses, Status, Shutdown, FileInfo, PutFile,
                                                          GetFile)}
EVENTS: dict[str, type[Message]] = {c.type: c for c in (Ready, Progress, PosesProgress, Artifact, Log,
                                                        Error, Done, State, FileState, FileChunk)}


def parse_request(line: str | bytes) -> Message:
    return parse(line, REQUESTS)


def parse_event(line: str | bytes) -> Message:
    return parse(line, EVENTS)
