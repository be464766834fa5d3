# What an operator needs after `terraform apply`.

output "api_url" {
  description = "Base URL of the HTTP API (routes under /api/v1)."
  value       = google_cloudfunctions2_function.fn["api"].service_config[0].uri
}

output "function_urls" {
  description = "URL of every function."
  value       = { for name, fn in google_cloudfunctions2_function.fn : name => fn.service_config[0].uri }
}

output "worker_service" {
  description = "Cloud Run service of the exit monitor."
  value       = google_cloud_run_v2_service.worker.name
}

output "worker_image_repository" {
  description = "Artifact Registry path to push the worker image to."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.containers.repository_id}"
}

output "buckets" {
  description = "Bucket names by purpose."
  value       = merge(local.bucket_names, { sources = google_storage_bucket.sources.name, access_logs = google_storage_bucket.access_logs.name })
}

output "topics" {
  description = "Pub/Sub topics and their dead-letter topics."
  value       = { for key, t in google_pubsub_topic.topic : key => { topic = t.name, dead_letter = google_pubsub_topic.dead_letter[key].name } }
}

output "service_accounts" {
  description = "Runtime identity of every function and the worker."
  value       = { for key, sa in google_service_account.runtime : key => sa.email }
}

output "static_secrets" {
  description = "Secrets whose values are added by hand (docs/deploy.md)."
  value       = [for s in google_secret_manager_secret.static : s.secret_id]
}

output "user_secret_prefix" {
  description = "Name prefix of per-user exchange-key secrets."
  value       = var.user_secret_prefix
}
