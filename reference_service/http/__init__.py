"""HTTP layer: problem details, authentication, pagination and the versioned routes."""
