# Firestore (native mode) and the composite indexes the use-cases' queries need. The
# emulator does not enforce indexes, so they are declared once, in
# infra/firestore.indexes.json (Firebase CLI format), and created from that file here.

locals {
  firestore_indexes_file = "${path.module}/../infra/firestore.indexes.json"
  firestore_indexes_doc  = jsondecode(fileexists(local.firestore_indexes_file) ? file(local.firestore_indexes_file) : "{\"indexes\": []}")

  # Key: collection group + fields, so an index keeps its address when others are added.
  firestore_indexes = {
    for index in try(local.firestore_indexes_doc.indexes, []) :
    join("/", concat(
      [index.collectionGroup, try(index.queryScope, "COLLECTION")],
      [for f in index.fields : "${f.fieldPath}:${try(f.order, try(f.arrayConfig, ""))}"]
    )) => index
  }
}

resource "google_firestore_database" "main" {
  project                           = var.project_id
  name                              = var.firestore_database
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.apis]
}

resource "google_firestore_index" "composite" {
  for_each = local.firestore_indexes

  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = each.value.collectionGroup
  query_scope = try(each.value.queryScope, "COLLECTION")

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path   = fields.value.fieldPath
      order        = try(fields.value.order, null)
      array_config = try(fields.value.arrayConfig, null)
    }
  }
}
