"""The store and everything humans touch: data model, queue, import, aggregation, export,
the annotation server and the Argilla bridge."""
