"""raftcron's web dashboard and its JSON HTTP API (``raftcron dashboard``, ``agent
--listen-http``).

A client of the store like the CLI: everything goes through :mod:`coord.client` and
:mod:`scheduler.admin`, so it works the same on coord and on a real etcd. The parts:
:mod:`.app` (the aiohttp application, its routes and JSON errors), :mod:`.model` (the live
read model fed by store watches), :mod:`.api` (the read API), :mod:`.live` (server-sent
events), :mod:`.pages` (HTML), :mod:`.actions` (trigger, kill, suspend, resume),
:mod:`.serve` (running the app on a listener).
"""
