"""``wsss crf labels`` stage on the toy data: artifact, resume, parallel workers, errors naming the image."""
import shutil

import numpy as np
import pytest

from wsss.artifacts import read_manifest
from wsss.data.prepared import open_dataset
from wsss.data.palette import read_label_png
from wsss.errors import UserError
from wsss.ops.crf import crf_labels_from_cams
from wsss.stages import crf_labels
from wsss.stages.crf_labels import CrfLabelsConfig, run

from tests.stages.cam_artifacts import toy_cams, write_cam_artifact


@pytest.fixture(scope="module")
def cams_val(toy_data, tmp_path_factory):
    return write_cam_artifact(toy_data, "val", tmp_path_factory.mktemp("crf") / "cams")


def config(toy_data, cams, out, **kw):
    return CrfLabelsConfig(data=toy_data, split="val", cams=cams, alpha=kw.pop("alpha", 4.0), out=out, **kw)


def test_labels_artifact_matches_the_op(toy_data, cams_val, tmp_path):
    manifest = run(config(toy_data, cams_val, tmp_path / "la"))
    data = open_dataset(toy_data)
    ids = data.ids("val")
    assert manifest.kind == "label" and manifest.num_items == len(ids) == 8
    assert read_manifest(tmp_path / "la", kind="label").config["alpha"] == 4.0
    for n, image_id in enumerate(ids):
        labels = read_label_png(tmp_path / "la" / f"{image_id}.png")
        cams, classes = toy_cams(data, image_id, n)
        expected = crf_labels_from_cams(data.read_image(image_id), cams, classes, 4.0)
        assert np.array_equal(labels, expected)
        assert set(np.unique(labels).tolist()) <= {0, *(classes + 1).tolist()}


def test_two_workers_give_the_same_labels(toy_data, cams_val, tmp_path):
    run(config(toy_data, cams_val, tmp_path / "one", alpha=32.0))
    run(config(toy_data, cams_val, tmp_path / "two", alpha=32.0, workers=2))
    for path in sorted((tmp_path / "one").glob("*.png")):
        assert np.array_equal(read_label_png(path), read_label_png(tmp_path / "two" / path.name))


def test_crf_flags_reach_the_crf(toy_data, cams_val, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(crf_labels.crf, "crf_labels_from_cams",
                        lambda image, cams, classes, alpha, params: seen.append((alpha, params)) or
                        np.zeros(image.shape[:2], np.uint8))
    run(config(toy_data, cams_val, tmp_path / "flags", alpha=24.0, gaussian_sxy=2.0, gaussian_compat=1.0,
               bilateral_sxy=50.0, bilateral_srgb=5.0, bilateral_compat=4.0, iterations=3))
    assert len(seen) == 8
    assert seen[0] == (24.0, {"gaussian_sxy": 2.0, "gaussian_compat": 1.0, "bilateral_sxy": 50.0,
                              "bilateral_srgb": 5.0, "bilateral_compat": 4.0, "iterations": 3})


class Killed(BaseException):
    """Stands for the process being killed (not an Exception: nothing may catch it)."""


def test_resume_after_a_crash_and_nothing_to_do_when_done(toy_data, cams_val, tmp_path, monkeypatch):
    real, calls, crashed = crf_labels.crf.crf_labels_from_cams, [], []

    def crashing(image, cams, classes, alpha, params):
        calls.append(1)
        if len(calls) == 4 and not crashed:
            crashed.append(True)
            raise Killed  # a kill in the middle of the 4th image of the first run
        return real(image, cams, classes, alpha, params)

    monkeypatch.setattr(crf_labels.crf, "crf_labels_from_cams", crashing)
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run(config(toy_data, cams_val, out))
    assert len(list(out.glob("*.png"))) == 3 and not (out / "manifest.json").exists()
    calls.clear()
    manifest = run(config(toy_data, cams_val, out))
    assert len(calls) == 5 and manifest.num_items == 8
    calls.clear()
    assert run(config(toy_data, cams_val, out)).num_items == 8 and calls == []


def test_worker_errors_surface_with_the_image(toy_data, cams_val, tmp_path):
    cams = tmp_path / "cams"
    shutil.copytree(cams_val, cams)
    bad = sorted(cams.glob("*.npz"))[5]
    bad.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match=f"{bad.name}: not a CAM file"):
        run(config(toy_data, cams, tmp_path / "out", workers=2))


def test_unexpected_errors_name_the_image(toy_data, cams_val, tmp_path, monkeypatch):
    def broken(*args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(crf_labels.crf, "crf_labels_from_cams", broken)
    first = open_dataset(toy_data).ids("val")[0]
    with pytest.raises(RuntimeError, match=f"crf labels: image {first}: ZeroDivisionError: boom"):
        run(config(toy_data, cams_val, tmp_path / "out"))


def test_cam_files_must_match_the_split(toy_data, cams_val, tmp_path):
    extra = tmp_path / "extra"
    shutil.copytree(cams_val, extra)
    train_id = open_dataset(toy_data).ids("train")[0]
    shutil.copy(next(extra.glob("*.npz")), extra / f"{train_id}.npz")
    (extra / "manifest.json").write_text((extra / "manifest.json").read_text().replace('"num_items": 8',
                                                                                       '"num_items": 9'))
    with pytest.raises(UserError, match=rf"1 CAM files are not ids of split 'val' \(first: {train_id}\)"):
        run(config(toy_data, extra, tmp_path / "out"))
    part = write_cam_artifact(toy_data, "val", tmp_path / "part", ids=open_dataset(toy_data).ids("val")[:5])
    with pytest.raises(UserError, match="no CAM file for 3 of 8 ids of split 'val'"):
        run(config(toy_data, part, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_bad_cam_content_and_folders(toy_data, cams_val, tmp_path):
    cams = tmp_path / "cams"
    shutil.copytree(cams_val, cams)
    victim = sorted(cams.glob("*.npz"))[2]
    with np.load(victim) as z:
        np.savez(victim, cams=z["cams"][:, :-1], classes=z["classes"])
    with pytest.raises(UserError, match=f"{victim.name}: CAMs are .* but the image is"):
        run(config(toy_data, cams, tmp_path / "out"))
    with pytest.raises(UserError, match="--cams .*no such folder"):
        run(config(toy_data, tmp_path / "nowhere", tmp_path / "out2"))
    with pytest.raises(UserError, match="--alpha must be > 0"):
        config(toy_data, cams, tmp_path / "out3", alpha=0.0)
    with pytest.raises(UserError, match="--iterations must be >= 0"):
        config(toy_data, cams, tmp_path / "out3", iterations=-1)


def test_cams_of_a_larger_split_serve_a_subset(toy_data, tmp_path):
    # PSA infers CAMs on train_aug and evaluates / walks on train: the extra train_aug files are left out.
    cams = write_cam_artifact(toy_data, "train_aug", tmp_path / "cams_aug")
    manifest = run(CrfLabelsConfig(data=toy_data, split="train", cams=cams, alpha=4.0, out=tmp_path / "la"))
    assert manifest.num_items == len(open_dataset(toy_data).ids("train")) < read_manifest(cams, "cam").num_items
