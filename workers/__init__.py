"""The plain, Faust-free logic the stream agents call: validation, dead letters, inference,
Redis aggregation and the per-batch processor that ties them together."""
