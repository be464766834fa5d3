"""Cloud Build, the worker image, checkov's skip list and the Makefile targets agree with
terraform/ and with each other."""

from __future__ import annotations

import re

import pytest

from prometheus_trader.app.settings import Settings
from tests.infra.terraform_model import REPO, TERRAFORM_DIR, TerraformModel, block

pytestmark = pytest.mark.infra

CHECK_ID = re.compile(r"CKV2?_[A-Z]+_[0-9]+")


def _make_targets() -> dict[str, str]:
    """Makefile target -> its prerequisites line."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return dict(re.findall(r"^([A-Za-z_-]+):(?!=)(.*)$", text, re.MULTILINE))


def _skipped_checks() -> set[str]:
    config = (TERRAFORM_DIR / ".checkov.yaml").read_text(encoding="utf-8")
    section = config.split("skip-check:", 1)[1] if "skip-check:" in config else ""
    listed = set(re.findall(r"^\s*-\s*(CKV2?_[A-Z]+_[0-9]+)", section, re.MULTILINE))
    inline: set[str] = set()
    for path in TERRAFORM_DIR.glob("*.tf"):
        inline |= set(
            re.findall(r"#\s*checkov:skip=(CKV2?_[A-Z]+_[0-9]+)", path.read_text("utf-8"))
        )
    return listed | inline


def test_every_skipped_checkov_check_has_a_documented_reason() -> None:
    skipped = _skipped_checks()
    assert skipped, "no skips found: the parser is broken or the list file is unused"
    doc = (TERRAFORM_DIR / "checkov-skips.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and CHECK_ID.fullmatch(cells[0]):
            rows[cells[0]] = cells[-1]
    missing = sorted(skipped - set(rows))
    assert not missing, f"skipped without a reason in checkov-skips.md: {missing}"
    assert all(len(reason) > 30 for reason in rows.values()), "a reason is too thin"
    stale = sorted(set(rows) - skipped)
    assert not stale, f"documented but no longer skipped: {stale}"


def test_make_test_runs_checkov_and_cost_has_a_target() -> None:
    targets = _make_targets()
    assert "scripts/checkov.sh" in (REPO / "Makefile").read_text(encoding="utf-8")
    assert "checkov" in targets and "cost" in targets
    assert "checkov" in targets["test"].split(), "`make test` must run checkov"
    checkov = (REPO / "scripts" / "checkov.sh").read_text(encoding="utf-8")
    assert "--skip-download" in checkov and ".venv-checkov" in checkov


def test_cloudbuild_lints_tests_stages_and_deploys() -> None:
    text = (REPO / "cloudbuild.yaml").read_text(encoding="utf-8")
    ids = re.findall(r"^\s*- id: ([a-z-]+)$", text, re.MULTILINE)
    expected = [
        "lint",
        "test",
        "stage",
        "terraform-init",
        "registry",
        "worker-image",
        "worker-push",
        "terraform-plan",
        "terraform-apply",
    ]
    assert ids == expected
    assert "make stage" in text and "make pytest checkov" in text
    assert "-backend-config=bucket=${_TF_STATE_BUCKET}" in text
    assert "-var=worker_image_tag=${BUILD_ID}" in text
    assert "terraform apply -input=false tfplan" in text
    # shell variables must be escaped from Cloud Build's own substitution
    lowercase_refs = re.findall(r"(?<!\$)\$\{?[a-z][a-z_]*\}?", text)
    assert not lowercase_refs, f"unescaped shell variables: {lowercase_refs}"


def test_worker_image_matches_the_cloud_run_service() -> None:
    docker = (REPO / "infra" / "Dockerfile.worker").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", docker, re.MULTILINE)
    # dependencies from the lock (hash-checked), then the package without re-resolving
    assert "uv export --frozen --no-dev" in docker and "COPY pyproject.toml uv.lock" in docker
    assert "pip install --require-hashes -r" in docker
    assert "pip install --no-deps ." in docker
    uv_image = re.search(r"^ARG UV_VERSION=(\S+)$", docker, re.MULTILINE)
    uv_make = re.search(r"^UV_VERSION\s*:=\s*(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert uv_image and uv_make and uv_image.group(1) == uv_make.group(1)
    assert 'CMD ["prometheus-trader", "worker"]' in docker
    assert re.search(r"^USER (?!root)\w+", docker, re.MULTILINE), "runs as root"
    tf = TerraformModel.load()
    container = block(
        tf.resource("google_cloud_run_v2_service", "worker"), "template", "containers"
    )
    port = block(container, "ports")["container_port"]
    assert f"PORT={port}" in docker and f"EXPOSE {port}" in docker
    assert port == Settings.model_fields["worker_port"].default
    repo_path = tf.outputs["worker_image_repository"]["value"]
    assert repo_path.endswith("${google_artifact_registry_repository.containers.repository_id}")
    cloudbuild = (REPO / "cloudbuild.yaml").read_text(encoding="utf-8")
    assert "infra/Dockerfile.worker" in cloudbuild
    assert "docker.pkg.dev/${PROJECT_ID}/${_NAME_PREFIX}/worker:${BUILD_ID}" in cloudbuild


def test_deploy_guide_covers_the_path_to_a_running_deployment() -> None:
    guide = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    for needle in (
        "gcloud projects create",
        "terraform init",
        "terraform apply",
        "gcloud builds submit",
        "gcloud secrets versions add",
        "users",  # adding a user document
        "exchange",
        "make cost",
    ):
        assert needle in guide, f"docs/deploy.md does not mention {needle!r}"
