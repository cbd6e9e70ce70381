"""The wire protocol module (stdlib only): validation, error codes, event lines."""
import json
import os
import subprocess
import sys

import pytest

from backend import protocol as P


def test_protocol_imports_only_the_standard_library():
    code = ("import sys, importlib.util; spec = importlib.util.spec_from_file_location('p', 'backend/protocol.py');"
            "m = importlib.util.module_from_spec(spec); sys.modules['p'] = m; spec.loader.exec_module(m);"
            "bad = [n for n in sys.modules if n.split('.')[0] in ('torch', 'numpy', 'models', 'backend')];"
            "print(bad); sys.exit(1 if bad else 0)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert subprocess.run([sys.executable, "-c", code], cwd=repo).returncode == 0


def test_valid_requests_get_defaults():
    req = P.parse_request(b'{"op": "generate", "id": "a", "prompt": "a red chair"}')
    assert req["mode"] == "text" and req["seed"] == 0 and req["resolution"] == 128
    req = P.parse_request('{"op": "edit", "id": "b", "asset": "x.safetensors", "instruction": "make it blue"}')
    assert req["strength"] == 1.0
    assert P.parse_request('{"op":"hello","id":"h"}')["op"] == "hello"


@pytest.mark.parametrize("line, words", [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe\x00", "UTF-8"),
    (b"[1, 2]", "JSON object"),
    (b'{"op": "fly", "id": "x"}', "unknown op"),
    (b'{"op": "generate", "prompt": "a"}', "needs field 'id'"),
    (b'{"op": "generate", "id": 5, "prompt": "a"}', "'id' must be a string"),
    (b'{"op": "generate", "id": "x", "prompt": 5}', "must be a string"),
    (b'{"op": "generate", "id": "x", "prompt": "a", "seed": true}', "boolean"),
    (b'{"op": "generate", "id": "x", "prompt": "a", "seed": -1}', "must be in"),
    (b'{"op": "generate", "id": "x", "prompt": "a", "resolution": 100}', "one of"),
    (b'{"op": "generate", "id": "x", "prompt": "   "}', "prompt is empty"),
    (b'{"op": "generate", "id": "x", "mode": "images"}', "front"),
    (b'{"op": "generate", "id": "x", "prompt": "a", "colour": "red"}', "unknown field"),
    (b'{"op": "edit", "id": "x", "instruction": "blue"}', "exactly one"),
    (b'{"op": "edit", "id": "x", "asset": "a", "mesh": "b", "instruction": "blue"}', "exactly one"),
    (b'{"op": "edit", "id": "x", "asset": "a", "instruction": ""}', "instruction is empty"),
    (b'{"op": "edit", "id": "x", "asset": "a", "instruction": "b", "strength": 1.5}', "must be in"),
    (b'{"op": "generate", "id": "x", "prompt": "a", "min_part": 1.5}', "must be in"),
    (b'{"op": "generate", "id": "x", "prompt": "a", "candidates": 0}', "must be in"),
    (b'{"op": "generate", "id": "x", "mode": "images", "front": "f.png", "candidates": 2}', "for text prompts"),
    (b'{"op": "generate", "id": "x", "mode": "images", "front": "f.png", "rebuild": false}', "for text prompts"),
    (b'{"op": "generate", "id": "x", "prompt": "a", "rebuild": "no"}', "must be"),
    (b'{"op": "cancel", "id": "x"}', "target"),
    (b'{"op": "generate", "id": "x", "prompt": "a\\u0000b"}', "NUL"),
])
def test_bad_requests_name_the_problem(line, words):
    with pytest.raises(P.ProtocolError) as info:
        P.parse_request(line)
    assert info.value.code == "bad_request"
    assert words in info.value.message


def test_error_keeps_the_id_when_readable():
    with pytest.raises(P.ProtocolError) as info:
        P.parse_request(b'{"op": "generate", "id": "keep-me", "prompt": 3}')
    assert info.value.request_id == "keep-me"


def test_huge_line_rejected():
    with pytest.raises(P.ProtocolError):
        P.parse_request(b'{"op": "hello", "id": "' + b"x" * (P.MAX_LINE_BYTES + 10) + b'"}')


def test_events_are_single_json_lines():
    line = P.event("progress", "j", stage="mesh", fraction=0.5, message="a\nb")
    assert "\n" not in line and json.loads(line)["message"] == "a\nb"
    assert P.parse_event(P.error_event("bad_input", "nope", "j"))["code"] == "bad_input"
    with pytest.raises(ValueError):
        P.parse_event('{"hello": 1}')
    with pytest.raises(AssertionError):
        P.error_event("made_up_code", "x")
