# The always-on exit monitor (SPEC §6): a Cloud Run service with exactly one instance that
# keeps its CPU between requests (it streams trades and runs a 2-second loop, not request
# handlers). It serves its health endpoint on $PORT; the probes restart it if the loop
# stalls. The image is built from infra/Dockerfile.worker into the repository below.

locals {
  worker_image = var.worker_image != "" ? var.worker_image : "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.containers.repository_id}/worker:${var.worker_image_tag}"
}

resource "google_artifact_registry_repository" "containers" {
  project       = var.project_id
  location      = var.region
  repository_id = var.name_prefix
  description   = "Prometheus container images (the exit-monitor worker)."
  format        = "DOCKER"

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"

    most_recent_versions {
      keep_count = 10
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"

    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_cloud_run_v2_service" "worker" {
  project             = var.project_id
  location            = var.region
  name                = "${var.name_prefix}-worker"
  description         = "Exit monitor: trade stream, 2-second exit checks, heartbeat."
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = false

  template {
    service_account                  = google_service_account.runtime["worker"].email
    max_instance_request_concurrency = 10
    timeout                          = "60s"

    # Exactly one monitor: positions are watched once, never by two loops at a time.
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }

    containers {
      name  = "worker"
      image = local.worker_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.worker_cpu
          memory = var.worker_memory
        }
        cpu_idle          = false # CPU always allocated: the loop runs between requests
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }

      startup_probe {
        initial_delay_seconds = 5
        period_seconds        = 10
        timeout_seconds       = 5
        failure_threshold     = 12

        http_get {
          path = var.worker_health_path
          port = 8080
        }
      }

      liveness_probe {
        initial_delay_seconds = 30
        period_seconds        = 30
        timeout_seconds       = 5
        failure_threshold     = 3

        http_get {
          path = var.worker_health_path
          port = 8080
        }
      }
    }
  }

  depends_on = [google_project_service.apis]
}
