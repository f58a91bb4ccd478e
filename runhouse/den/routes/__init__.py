"""Den's HTTP routes, one router per area: tokens and auth, resources and sharing, secrets, clusters
(events, usage, heartbeats). Each route validates its names, runs its work in one database
transaction and returns the reply models of :mod:`runhouse.den.schemas`."""
