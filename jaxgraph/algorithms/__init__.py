"""Algorithms built on the solver: marginal covariances, graduated non-convexity (GNC),
chordal initialisation."""
