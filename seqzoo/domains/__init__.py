"""Domain tasks: one LightningModule per application domain (embedding -> backbone -> head,
loss, metrics, export), all built on :class:`seqzoo.domains.base.BaseTask`."""
