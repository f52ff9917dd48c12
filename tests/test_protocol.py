"""The service protocol: round trips, strict parsing with messages that name the field, and
property-based garbage (whatever arrives, parsing gives a message or a ProtocolError)."""
from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngp_engine.service.protocol import (EVENTS, MAX_LINE_BYTES, REQUESTS, Artifact, Camera, Done, Error,
                                 ExportMesh, FileChunk, FileInfo, FileState, GetFile, Hello, Log, Preview,
                                 Progress, ProtocolError, PutFile, Ready,
                                 Shutdown, State, Status, Stop, Train, parse_event, parse_request)

CAMERA = Camera(transform_matrix=[[1.0, 0, 0, 0.5], [0, 1, 0, -2], [0, 0, 1, 3], [0, 0, 0, 1]],
                w=160, h=120, fl_x=200.0, cx=81.0)
REQUEST_SAMPLES = [
    Hello(protocol=1, client="blender 5.0", id="h"),
    Train(mode="nerf", data="/data/scene", run_dir="/runs/a", preset="cpu-fast", seconds=60.0,
          checkpoint_every=5.0, id="t1"),
    Train(mode="image", data="/img.png", run_dir="/runs/b", config={"schema_version": 1, "batch_size": 4},
          steps=10, resume="/runs/b/checkpoint.pt", device="cpu"),
    Stop(), Preview(camera=CAMERA, passes=["rgb", "depth"], resolution=[64, 48], id="p"),
    Preview(), ExportMesh(resolution=128, threshold=3.0),
    ExportMesh(resolution=64, box=[[-1.0, -1.0, 0.0], [1.0, 1.0, 0.5]], id="m"), Status(id="s"), Shutdown(),
    FileInfo(path="runs/a/in/x.png", id="f"), PutFile(path="in/x.png", offset=0, data="aGk=", id="u"),
    PutFile(path="in/x.png", offset=2, data="", last=True, sha256="a" * 64), GetFile(path="runs/a/mesh.ply", offset=4),
]
EVENT_SAMPLES = [
    Ready(engine_version="0.1.0", protocol=1, device="cpu", backends=["torch", "cpu"], modes=["nerf"],
          pid=12, python="/usr/bin/python3", torch="2.13.0", request="h"),
    Ready(engine_version="0.1.0", protocol=2, device="cuda", backends=["torch", "triton"], modes=["nerf"],
          pid=12, python="/usr/bin/python3", torch="2.13.0",
          devices={"cpu": "AMD EPYC, 16 threads", "cuda": "NVIDIA H200"}, backend="triton"),
    Progress(mode="nerf", step=3, seconds=0.5, loss=0.01, psnr=21.5, fraction=0.25, eta_seconds=1.5),
    Artifact(kind="pass", path="/runs/a/previews/p_rgb.npy", info={"pass": "rgb", "step": 3}, request="p"),
    Log(level="info", message="hello"), Error(message="train.steps: bad", detail="Traceback"),
    Done(summary={"steps": 10, "stopped": True}), State(job="training", mode="nerf", step=4, seconds=1.0),
    FileState(path="in/x.png", exists=True, size=2, sha256="b" * 64, request="f"),
    FileChunk(path="runs/a/mesh.ply", offset=0, data="aGk=", size=2, last=True, sha256="c" * 64, request="g"),
]


@pytest.mark.parametrize("msg", REQUEST_SAMPLES + EVENT_SAMPLES, ids=lambda m: m.type)
def test_every_message_round_trips_through_one_json_line(msg):
    line = msg.to_json()
    assert "\n" not in line and json.loads(line)["type"] == msg.type
    parse = parse_request if msg.type in REQUESTS else parse_event
    assert parse(line) == msg
    assert parse(line.encode("utf-8")) == msg


def test_registries_cover_distinct_types():
    assert set(REQUESTS) == {"hello", "train", "stop", "preview", "export_mesh", "poses", "status",
                             "shutdown", "file_info", "put_file", "get_file"}
    assert set(EVENTS) == {"ready", "progress", "poses_progress", "artifact", "log", "error", "done",
                           "state", "file_state", "file_chunk"}


@pytest.mark.parametrize("bad, field", [
    ('{"type":"put_file","path":"a","offset":-1,"data":""}', "offset"),
    ('{"type":"put_file","path":"a","offset":0,"data":"","last":true}', "sha256"),
    ('{"type":"get_file","path":"","offset":0}', "path"),
])
def test_bad_file_messages_name_the_field(bad, field):
    with pytest.raises(ProtocolError, match=f"^{bad.split(chr(34))[3]}.{field}: "):
        parse_request(bad)


def test_camera_intrinsics_scale_with_the_rendered_size():
    # fl_y defaults to fl_x and cy to h / 2; at 80x60 every value halves.
    assert CAMERA.intrinsics == (200.0, 200.0, 81.0, 60.0) and (CAMERA.w, CAMERA.h) == (160, 120)
    half = CAMERA.resized(80, 60)
    assert half.intrinsics == (100.0, 100.0, 40.5, 30.0) and (half.w, half.h) == (80, 60)


TRAIN = '"type":"train","mode":"nerf","data":"/d","run_dir":"/r"'
BAD_LINES = [
    ('{"type":"export_mesh","box":[[0,0,1],[1,1,1]]}', "export_mesh.box: [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]] must be [lo, hi]"),
    ('{"type":"export_mesh","box":[[0,0],[1,1]]}', "export_mesh.box: [[0.0, 0.0], [1.0, 1.0]] must be [lo, hi]"),
    ('{"type":"poses","input":"/p"}', "poses.out: missing"),
    ('{"type":"poses","input":"/p","out":"/o","matching":"random"}', "poses.matching: 'random' is not one of"),
    ('{"type":"poses","input":"/p","out":"/o","sfm_size":10}', "poses.sfm_size: 10 must be in 64..8192"),
    ("hello there", "line is not JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ("{}", "type: missing"),
    ('{"type": 3}', "type: expected a string, got 3"),
    ('{"type":"fly"}', "type: 'fly' is not one of hello, train"),
    ('{"type":"train","mode":"nerf","data":"/d"}', "train.run_dir: missing"),
    ('{' + TRAIN + ',"colour":1}', "train.colour: unknown key"),
    ('{' + TRAIN + ',"steps":"10"}', "train.steps: expected an integer, got '10'"),
    ('{' + TRAIN + ',"steps":true}', "train.steps: expected an integer, got True"),
    ('{' + TRAIN + ',"steps":-1}', "steps: -1 must be >= 0"),
    ('{' + TRAIN + ',"steps":5,"seconds":2}', "seconds: 2.0 cannot be given together with steps"),
    ('{' + TRAIN + ',"seconds":NaN}', "NaN is not a JSON number"),
    ('{' + TRAIN + ',"seconds":1e999}', "expected a finite number"),
    ('{' + TRAIN + ',"seconds":' + "9" * 400 + '}', "train.seconds: " + "9" * 57 + "... is out of range"),
    ('{' + TRAIN + ',"config":{"a":[Infinity]}}', "Infinity is not a JSON number"),
    ('{"type":"train","mode":"","data":"/d","run_dir":"/r"}', "train.mode: '' must name a training mode"),
    ('{"type":"preview","passes":["beauty"]}', "passes: 'beauty' is not one of"),
    ('{"type":"preview","passes":[]}', "passes: [] must name at least one pass"),
    ('{"type":"preview","resolution":[64]}', "resolution: [64] must be [width, height]"),
    ('{"type":"preview","camera":{"transform_matrix":[[1,0,0,0]],"w":4,"h":4,"fl_x":2}}',
     "preview.camera.transform_matrix: must be a 4x4 list of numbers, got 1 rows of [4] numbers"),
    ('{"type":"preview","camera":{"transform_matrix":[[1,0,0,"x"]],"w":4,"h":4,"fl_x":2}}',
     "preview.camera.transform_matrix[0][3]: expected a number, got 'x'"),
    ('{"type":"preview","camera":{"w":4,"h":4,"fl_x":2}}', "preview.camera.transform_matrix: missing"),
    ('{"type":"export_mesh","resolution":4}', "resolution: 4 must be in 8..1024"),
    ('{"type":"status","id":7}', "status.id: expected a string, got 7"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
]


@pytest.mark.parametrize("line, expected", BAD_LINES, ids=[b[1][:30] for b in BAD_LINES])
def test_bad_lines_are_protocol_errors_naming_the_field(line, expected):
    with pytest.raises(ProtocolError) as err:
        parse_request(line)
    assert expected in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_bytes_that_are_not_utf8_or_too_long_are_refused():
    with pytest.raises(ProtocolError, match="not UTF-8"):
        parse_request(b'{"type":"status","id":"\xff"}')
    with pytest.raises(ProtocolError, match="longer than"):
        parse_request(b" " * (MAX_LINE_BYTES + 1))


def test_events_are_not_requests():
    with pytest.raises(ProtocolError, match="'ready' is not one of"):
        parse_request(EVENT_SAMPLES[0].to_json())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), json_values.map(json.dumps)))
def test_any_input_parses_or_is_a_protocol_error(line):
    try:
        msg = parse_request(line)
    except ProtocolError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert msg.type in REQUESTS


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REQUEST_SAMPLES), st.data())
def test_any_field_replaced_by_any_value_parses_or_is_a_protocol_error(msg, data):
    fields = [f.name for f in dataclasses.fields(msg)]
    if not fields:
        return
    d = msg.to_dict()
    d[data.draw(st.sampled_from(fields))] = data.draw(json_values)
    try:
        got = parse_request(json.dumps(d))
    except ProtocolError as e:
        assert str(e).startswith(msg.type) and "\n" not in str(e)
    else:
        assert type(got) is type(msg)
