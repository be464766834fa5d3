"""Google Cloud adapters (Firestore, Pub/Sub, Cloud Storage, Secret Manager)."""
