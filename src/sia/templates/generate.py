"""Template harness: prompt with the task's instruction, generate freely, parse the answer.

It reads everything task-specific from `ctx.task` (instruction, allowed labels),
so it works for any text task. Improvements are left to the improvement loop.
"""


def build_prompt(example, ctx):
    text = example.get(ctx.task.get("input_field") or "text", "")
    instruction = ctx.task.get("instruction") or ctx.task.get("description", "")
    return f"{instruction}\n\n{text}"


def parse_answer(reply, ctx):
    labels = ctx.task.get("labels") or []
    if not labels:
        return reply.strip()
    lowered = reply.lower()
    found = [label for label in labels if label.lower() in lowered]
    if ctx.task.get("multi_label"):
        return ";".join(found) if found else reply.strip()
    if found:
        # the label mentioned first in the reply
        return min(found, key=lambda label: lowered.find(label.lower()))
    return reply.strip()


def solve(example, ctx):
    prompt = build_prompt(example, ctx)
    reply = ctx.llm.chat([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=32)
    return parse_answer(reply.text, ctx)
