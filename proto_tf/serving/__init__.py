"""Exported SavedModels for TF Serving."""
