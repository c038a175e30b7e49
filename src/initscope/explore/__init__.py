"""`initscope explore`: the post as a live instrument, served locally.

A small Starlette app (`server.create_app`) answers a JSON API that runs the
study exactly as `initscope.run` does and serves one static page that redraws
the post's views in place with plotly.js (served from the installed plotly
package, never a CDN). The pieces:

- `requests`: request fields -> a validated Config (bad input, the data
  folder, the size budget) and tidy tables -> JSON;
- `jobs`: a bounded pool of runs, per-client cancellation, depth-prefix
  streaming;
- `server`: the routes.

Needs the optional extra: `pip install 'initscope[explore]'`.
"""

__all__ = ["create_app", "Settings"]


def __getattr__(name: str):
    # starlette is imported only when the server is wanted.
    if name in __all__:
        from initscope.explore import server

        return getattr(server, name)
    raise AttributeError(f"module 'initscope.explore' has no attribute {name!r}")
