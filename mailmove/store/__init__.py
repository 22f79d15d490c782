"""The read model and audit trail (SQLAlchemy), which outlive Temporal's retention."""
