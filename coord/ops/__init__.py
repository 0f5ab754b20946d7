"""Operations: the metrics and health listener (``--listen-metrics``), etcd's metric series
over a member, the gRPC health service. Wired by the composition roots (``coord.server.server``
and the CLI); the node's hot paths only call the plain hooks given to them."""
