"""The template-rendering process (run by app.engine.template_sandbox; not imported by the server).

Renders request and alias chat templates, which are user input, in a process of their own: a template that loops
or allocates without end is killed at its deadline or stopped by the address-space limit, and the server's threads
and memory are never involved. One JSON request per line on stdin, one JSON answer per line on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any


def main() -> None:
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from transformers.utils.chat_template_utils import render_jinja_template

    # After the imports: start-up at the lower priority took 10-15 s on a busy machine, all of it in the request
    # that waited for this worker. A runaway render competes with generation until its deadline: let it lose.
    try:
        os.nice(10)
    except OSError:
        pass

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        answer: dict[str, Any]
        try:
            req = json.loads(line)
            rendered = render_jinja_template(
                conversations=[req["messages"]],
                tools=req.get("tools"),
                chat_template=req["template"],
                add_generation_prompt=req.get("add_generation_prompt", True),
                continue_final_message=req.get("continue_final_message", False),
                **req.get("kwargs", {}),
            )
            text = str(rendered[0][0])
            limit = int(req.get("max_chars", 0))
            if limit and len(text) > limit:
                answer = {"error": f"the template renders {len(text)} characters, more than the limit of {limit}"}
            else:
                answer = {"text": text}
        except MemoryError:
            answer = {"error": "the template needs more memory than the limit allows"}
        except RecursionError:
            answer = {"error": "the template recurses too deeply"}
        except Exception as exc:  # jinja2 errors, raise_exception() in templates, type errors
            answer = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        try:
            out.write(json.dumps(answer) + "\n")
            out.flush()
        except MemoryError:
            out.write('{"error": "the template needs more memory than the limit allows"}\n')
            out.flush()


if __name__ == "__main__":
    main()
