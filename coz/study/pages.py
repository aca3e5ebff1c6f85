"""The HTML of the rating page: welcome, one question at a time, thank-you. Plain HTML forms (no
script), so any browser works and a reload shows the rater's next unanswered question.

Nothing here may name a method: samples are "Sample A", "Sample B"... in the rater's own order, and
media are named by a hash of their bytes (``coz.study.build.Media``).
"""

from __future__ import annotations

from html import escape

SCALE = ("Very Bad", "Bad", "Neutral", "Good", "Very Good")  # scores 1..5, as the paper's MOS test

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1060px;margin:1.5em auto;
padding:0 1em;color:#222;background:#fafafa}
h1{font-size:1.4em}.progress{color:#555;font-size:.95em}
.bar{height:6px;background:#ddd;border-radius:3px;margin:.3em 0 1em}.bar div{height:6px;background:#3b7ddd;border-radius:3px}
.instructions{background:#eef3fb;border-left:4px solid #3b7ddd;padding:.7em 1em;margin:1em 0}
.sample{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}
.sample h2{font-size:1.05em;margin:0 0 .6em}.media{display:flex;gap:1em;align-items:flex-start;flex-wrap:wrap}
.media img{max-width:100%;border:1px solid #ccc}.strip{flex:1 1 500px}
blockquote{font-size:1.1em;margin:.5em 0;padding:.6em 1em;background:#f3f3f3;border-radius:4px}
.scale{display:flex;gap:.4em;flex-wrap:wrap;margin-top:.8em}
.scale label{border:1px solid #bbb;border-radius:4px;padding:.35em .7em;cursor:pointer;background:#fff}
.scale input{margin-right:.35em}button{font-size:1.05em;padding:.5em 1.6em;margin:1em 0}
.error{color:#a00}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def welcome(text: str, needs_code: bool, error: str = "") -> str:
    code = (
        "<p><label>Access code: <input name='code' autocomplete='off' required></label></p>"
        if needs_code
        else ""
    )
    problem = f"<p class='error'>{escape(error)}</p>" if error else ""
    return _page(
        "User study",
        f"<h1>User study</h1><div class='instructions'>{escape(text)}</div>{problem}"
        f"<form method='post' action='/start'>{code}<button type='submit'>Start</button></form>",
    )


def question(
    number: int,
    total: int,
    instructions: str,
    spec: dict,
    order: list[str],
    question_id: str,
    action: str,
) -> str:
    """Question ``number`` of ``total``: each sample (in the rater's ``order``) with a 1-5 scale."""
    blocks = []
    for position, method in enumerate(order):
        sample = spec["samples"][method]
        letter = chr(ord("A") + position)
        if spec["kind"] == "image":
            media = (
                f"<div class='media'><img src='/{escape(sample['gif'])}' alt='zoom animation, sample {letter}' width='256'>"
                f"<img class='strip' src='/{escape(sample['strip'])}' alt='zoom sequence, sample {letter}'></div>"
            )
        else:
            media = (
                f"<div class='media'><img src='/{escape(sample['view'])}' alt='image, sample {letter}' width='320'>"
                f"<blockquote>{escape(sample['text'])}</blockquote></div>"
            )
        choices = "".join(
            f"<label><input type='radio' name='s{position}' value='{score}' required>{escape(label)}</label>"
            for score, label in enumerate(SCALE, start=1)
        )
        blocks.append(
            f"<div class='sample'><h2>Sample {letter}</h2>{media}<div class='scale'>{choices}</div></div>"
        )
    percent = round(100 * (number - 1) / max(total, 1))
    return _page(
        f"Question {number} of {total}",
        f"<p class='progress'>Question {number} of {total}</p><div class='bar'><div style='width:{percent}%'></div></div>"
        f"<div class='instructions'>{escape(instructions)}</div>"
        f"<form method='post' action='{escape(action)}'><input type='hidden' name='question' value='{escape(question_id)}'>"
        f"{''.join(blocks)}<button type='submit'>Next</button></form>",
    )


def thanks(text: str, total: int) -> str:
    return _page(
        "Thank you",
        f"<p class='progress'>{total} of {total} answered</p><div class='bar'><div style='width:100%'></div></div>"
        f"<h1>Thank you</h1><p>{escape(text)}</p>",
    )


def problem(text: str, back: str = "/") -> str:
    return _page("Problem", f"<p class='error'>{escape(text)}</p><p><a href='{escape(back)}'>Back</a></p>")
