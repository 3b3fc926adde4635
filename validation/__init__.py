"""Great Expectations suites, the model gate and promotion."""
