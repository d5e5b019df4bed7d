"""The x86 side of the arm64 parity suite: what the training machine computes, written as a bundle.

Everything here runs on the x86 workstation with torch: the reference library's pixels for every
preprocessing family on real photos (torchvision on PIL images and on uint8/float tensors, OpenCV's own
calls, Ultralytics' LetterBox), trained photo classifiers exported with their spec, their fp16 and int8
variants, torch's probabilities on real photo files, and edgeinfer's own x86 outputs beside them (so an
arm64 difference can be split into "edgeinfer vs the library" and "arm64 vs x86"). tests/arm64/device.py
reads the bundle inside the arm64 root, with no torch.

    .venv/bin/python -m tests.arm64.references BUNDLE_DIR
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
SKIMAGE_RGB = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def fingerprint() -> str:
    """Changes when what decides the references' pixels changes: this file, the pixel code (ops, resample,
    the C kernel, preprocess, transform -> spec), the library versions. Anything else: --rebuild-references."""
    import torch

    h = hashlib.sha1()
    for f in [HERE / "references.py", *(REPO / "edgeinfer" / "pipeline" / n for n in ("ops.py", "resample.py", "_resample.c",
                                                                        "preprocess.py")),
              REPO / "converters" / "transforms.py"]:
        h.update(f.name.encode() + f.read_bytes())
    h.update(f"{torch.__version__} {cv2.__version__} {np.__version__}".encode())
    return h.hexdigest()[:16]


def cases() -> list[tuple[str, np.ndarray, int, int]]:
    """(case, RGB photo, resize shorter side, crop): up, mild and strong down, a 1080p frame, odd sizes."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    china = load_sample_images().images[0]
    frame = cv2.resize(data.astronaut(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    return [
        ("upscale 300x451 -> 384", data.chelsea(), 400, 384),
        ("mild down 512 -> 448", data.astronaut(), 448, 448),
        ("strong down 427x640 -> 112", china, 128, 112),
        ("1080p frame -> 224", frame, 256, 224),
        ("odd 333x517 -> 89", china[40:373, 60:577], 97, 89),
    ]


def torchvision_families() -> dict[str, object]:
    """The torchvision families the preprocessing benchmark measures (one list: benchmarks/preprocess_parity.py)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "preprocess_parity.py"
    spec = importlib.util.spec_from_file_location("preprocess_parity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.families()


def _chw_rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


def preprocess_entries(bundle: Path) -> list[dict]:
    """Every family x case: the spec, the BGR input, the reference library's output and edgeinfer's on x86."""
    import torch
    from PIL import Image
    from ultralytics.data.augment import LetterBox

    from converters.transforms import spec_from_transform
    from edgeinfer import InputSpec, OutputSpec, Preprocessor, Spec, Step

    folder = bundle / "preprocess"
    folder.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, str] = {}
    entries = []

    def add(family: str, case: str, bgr: np.ndarray, spec: Spec, ref: np.ndarray, modes=("exact",)) -> None:
        key = hashlib.sha1(bgr.tobytes()).hexdigest()[:10]
        if key not in inputs:
            inputs[key] = f"preprocess/in-{key}.npy"
            np.save(bundle / inputs[key], bgr)
        n = len(entries)
        np.save(folder / f"{n:03d}-ref.npy", ref.astype(np.float32))
        for mode in modes:
            x86 = Preprocessor(spec, mode=mode)(bgr, color="bgr")
            np.save(folder / f"{n:03d}-x86-{mode}.npy", x86)
        entries.append({"family": family, "case": case, "input": inputs[key], "spec": json.loads(spec.to_json()),
                        "reference": f"preprocess/{n:03d}-ref.npy",
                        "x86": {m: f"preprocess/{n:03d}-x86-{m}.npy" for m in modes}})

    for fam, make in torchvision_families().items():
        for case, rgb, s, c in cases():
            tf = make(s, c)
            spec = spec_from_transform(tf, check=False)
            with torch.no_grad():
                ref = tf(Image.fromarray(rgb)).numpy()
            # fast mode only for the PIL families, where it pre-shrinks with OpenCV's INTER_AREA
            add(fam, case, np.ascontiguousarray(rgb[..., ::-1]), spec, ref,
                modes=("exact", "fast") if fam.startswith("PIL") else ("exact",))

    # OpenCV-trained pipelines: the reference is OpenCV's own call on x86. Beside the photos, the image
    # every exported spec carries as its self-test vector: whether the self-test can see an OpenCV difference.
    from converters.export import selftest_image

    opencv_cases = cases() + [("self-test image 96x128 -> 224", selftest_image(), 224, 224)]
    for filt, flag in (("nearest", cv2.INTER_NEAREST), ("bilinear", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC),
                       ("area", cv2.INTER_AREA), ("lanczos4", cv2.INTER_LANCZOS4)):
        for case, rgb, s, c in opencv_cases:
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            spec = Spec(steps=(Step("resize", {"rule": "exact", "size": [c, c], "interpolation": filt,
                                               "backend": "opencv"}), Step("to_float", {"scale": "div255"})),
                        input=InputSpec("input", (None, 3, c, c)), output=OutputSpec("logits")).validate()
            add(f"OpenCV {filt}", case.split(" -> ")[0] + f" -> {c}x{c}", bgr, spec,
                _chw_rgb(cv2.resize(bgr, (c, c), interpolation=flag)))

    lb = LetterBox(new_shape=(640, 640))
    for case, rgb, _, _ in opencv_cases:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        ref = lb(image=bgr)
        spec = Spec(steps=(Step("letterbox", {"size": [640, 640]}), Step("to_float", {"scale": "div255"})),
                    input=InputSpec("images", (None, 3, *ref.shape[:2])), output=OutputSpec("output0")).validate()
        add("Ultralytics letterbox 640", case.split(" -> ")[0], bgr, spec, _chw_rgb(ref))
    return entries


def photo_files() -> list[Path]:
    import skimage
    import sklearn

    sk = Path(skimage.__file__).parent / "data"
    sl = Path(sklearn.__file__).parent / "datasets" / "images"
    files = [sk / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg",
                              "motorcycle_left.png", "hubble_deep_field.jpg")] + [sl / "china.jpg", sl / "flower.jpg"]
    return [f for f in files if f.exists()]


def image_set(bundle: Path) -> list[str]:
    """Real photo files (PNG and JPEG) and random crops of the training photos as PNG, copied into the bundle."""
    from skimage import data

    from tests.material.photos import photo_crops

    folder = bundle / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for f in photo_files():
        shutil.copy(f, folder / f.name)
    photo_crops(folder, {n: getattr(data, n)() for n in SKIMAGE_RGB}, per_photo=4)
    return sorted(f"images/{f.name}" for f in folder.iterdir())


def decode_entries(bundle: Path, images: list[str]) -> list[dict]:
    """x86 decodes of each file: OpenCV's (what edgeinfer does) and PIL's (what torchvision training did)."""
    from PIL import Image

    out = []
    for rel in images:
        data = (bundle / rel).read_bytes()
        cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        pil = np.asarray(Image.open(bundle / rel).convert("RGB"))[..., ::-1]
        stem = rel.replace("/", "_")
        np.save(bundle / "preprocess" / f"decode-{stem}-cv2.npy", cv)
        np.save(bundle / "preprocess" / f"decode-{stem}-pil.npy", np.ascontiguousarray(pil))
        out.append({"file": rel, "x86_opencv": f"preprocess/decode-{stem}-cv2.npy",
                    "x86_pil": f"preprocess/decode-{stem}-pil.npy"})
    return out


def model_entries(bundle: Path, images: list[str], log) -> list[dict]:
    """Trained photo classifiers, exported with their spec; fp16/int8 variants; torch's and x86's probabilities."""
    import torch
    from PIL import Image
    from skimage import data

    import converters
    import edgeinfer
    from tests.material.photos import train_photo_classifier
    from converters.optimize import optimize
    from converters.zoo import imagenet_eval_transform

    photos = [getattr(data, n)() for n in SKIMAGE_RGB]
    transform = imagenet_eval_transform()
    files = [bundle / rel for rel in images]
    # calibration: the random crops (name_0.png ...); agreement: the whole photo files
    calib = [f for f in files if f.stem.rsplit("_", 1)[0] in SKIMAGE_RGB and f.stem.rsplit("_", 1)[-1].isdigit()]
    holdout = [f for f in files if f not in calib]
    folder = bundle / "models"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for arch in ("resnet18", "mobilenet_v3_small"):
        t0 = time.perf_counter()
        model = train_photo_classifier(arch, photos)
        path = folder / f"{arch}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = converters.export(model, path, transform=transform, labels=list(SKIMAGE_RGB), images=photos)
        with torch.no_grad():
            probs = torch.softmax(model(torch.stack([transform(Image.open(f).convert("RGB")) for f in files])),
                                  1).numpy()
        np.save(folder / f"{arch}-torch.npy", probs)
        deployed = edgeinfer.load(path)
        np.save(folder / f"{arch}-x86.npy", np.stack([deployed.predict(f).scores for f in files]))
        entry = {"name": arch, "path": f"models/{arch}.onnx", "torch_probs": f"models/{arch}-torch.npy",
                 "x86_probs": {"fp32": f"models/{arch}-x86.npy"}, "variants": {},
                 "export_parity": {"deploy_max_abs_diff": report.deploy_max_abs_diff,
                                   "deploy_top1_agreement": report.deploy_top1_agreement}}
        for kind in ("fp16", "int8"):
            vpath = folder / f"{arch}.{kind}.onnx"
            rep = optimize(path, vpath, kind=kind, calibration=calib, holdout=holdout, force=True)
            variant = edgeinfer.load(vpath)
            np.save(folder / f"{arch}-{kind}-x86.npy", np.stack([variant.predict(f).scores for f in files]))
            entry["variants"][kind] = f"models/{arch}.{kind}.onnx"
            entry["x86_probs"][kind] = f"models/{arch}-{kind}-x86.npy"
            entry.setdefault("x86_variant_agreement", {})[kind] = {
                "top1_vs_fp32": rep.top1_agreement, "max_abs_diff_vs_fp32": rep.max_abs_diff}
        log(f"references: {arch} trained, exported, fp16 and int8 written ({time.perf_counter() - t0:.0f} s)")
        out.append(entry)
    return out


def build(bundle: Path, *, log=print) -> dict:
    """Write the bundle (replacing an older one) and return its manifest."""
    import onnxruntime as ort
    import torch

    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    t0 = time.perf_counter()
    torch.set_num_threads(2)
    pre = preprocess_entries(bundle)
    log(f"references: {len(pre)} preprocessing cases ({time.perf_counter() - t0:.0f} s)")
    images = image_set(bundle)
    dec = decode_entries(bundle, images)
    models = model_entries(bundle, images, log)
    manifest = {"fingerprint": fingerprint(), "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "x86": {"machine": platform.machine(), "processor": _cpu_model(), "python": platform.python_version(),
                        "numpy": np.__version__, "opencv": cv2.__version__, "onnxruntime": ort.__version__,
                        "torch": torch.__version__},
                "preprocess": pre, "images": images, "decode": dec, "models": models}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    log(f"references: bundle written to {bundle} ({time.perf_counter() - t0:.0f} s)")
    return manifest


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    build(Path(sys.argv[1]))
