"""`datagen review RUN_DIR`: a local web page to look at a run's rows and correct them.

    index.py      the run's rows (kept, rejected, failed) in one SQLite file with full-text search,
                  built once per run into `RUN_DIR/review/index.sqlite`
    calls.py      which teacher calls of the journal made which dialogue
    decisions.py  a reviewer's decisions, appended to `RUN_DIR/review.jsonl`
    apply.py      `apply_decisions`: the `review` funnel step a run applies them with
    plots.py      the funnel and score plots, drawn as SVG on the server
    app.py        the Starlette app (Jinja2 templates, local static files, no CDN)
    cli.py        the command; it serves on 127.0.0.1 unless told otherwise

Stage outputs are never changed: decisions live in `review.jsonl` and take effect when the next
`datagen run` applies them.
"""
