"""`tspo-edge serve` and its client: the command as one call (serve.py), the ASGI app and its
routes (app.py), what the routes share (archive.py), the models shared by request threads
(shared_models.py), the listening socket (listen.py), the trust boundary (guard.py), handing out
indexed files (served_file.py), the web page (web/), and a light client of a running server
(client.py)."""
