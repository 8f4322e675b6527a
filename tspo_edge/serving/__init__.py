"""`tspo-edge serve` and its client: the ASGI app and its routes (server.py), the trust boundary
(guard.py), handing out indexed files (served_file.py), the web page (web/), and a light client
of a running server (client.py)."""
