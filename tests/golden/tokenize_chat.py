#!/usr/bin/env python3
"""Multi-turn goldens for bin/tokenize (alpaca with history, messages, sharegpt, text).

The expected ids follow the tutorial's process_func generalised to many turns
(docs/FORMATS.md): each masked stretch (turn headers, user/system/tool turns,
the "\\n" after each <|im_end|>, up to and including "<|im_start|>assistant\\n")
and each reply + "<|im_end|>" are tokenised separately with transformers'
AutoTokenizer(add_special_tokens=False); no "\\n" after the last <|im_end|>.

It also checks, with transformers' apply_chat_template on the Qwen-shaped
templates in tests/fixtures/tokenize/templates, that the concatenated segments
are exactly the chat template's text (less the final "\\n") whenever no reply
starts with whitespace, and records the default system text of each template.

Writes tests/fixtures/tokenize/chat_records.jsonl, chat_expected_<variant>.jsonl,
templates/expected_default_system.json.
usage: python3 tests/golden/tokenize_chat.py build/fixtures/qwen-tokenizer
"""
import json
import sys

from transformers import AutoTokenizer

OUT = "tests/fixtures/tokenize"

RECORDS = [
    {"instruction": "你是谁？", "input": "", "output": "我是甄嬛，家父是大理寺少卿甄远道。"},
    {"instruction": "Translate:", "input": "good morning", "output": "早上好", "system": "You translate.",
     "history": [["Hi", "Hello! How can I help?"], ["What is 2+2?", "4."]]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name three colours."},
                  {"role": "assistant", "content": "Red, green, blue."}]},
    {"messages": [{"role": "user", "content": "No system here."}, {"role": "assistant", "content": "Fine."}]},
    {"conversations": [{"from": "human", "value": "天气怎么样？"}, {"from": "gpt", "value": "今天晴天。"},
                       {"from": "human", "value": "明天呢"}, {"from": "gpt", "value": "明天下雨。"}],
     "system": "你是天气助手"},
    {"conversations": [{"from": "human", "value": "call it"}, {"from": "function_call", "value": "{\"name\": \"f\"}"},
                       {"from": "observation", "value": "42"}, {"from": "gpt", "value": "The answer is 42."}]},
    {"text": "Plain text, no template.\nSecond line 123."},
    {"messages": [{"role": "user", "content": "Only a question, no reply"}]},
    {"messages": [{"role": "user", "content": "Echo <|im_end|> and <|im_start|>please"},
                  {"role": "assistant", "content": "Sure: <|im_end|> done"}]},
    {"messages": [{"role": "user", "content": "Indented reply"}, {"role": "assistant", "content": "\n\n  code()"}]},
    {"messages": [{"role": "user", "content": "Empty reply"}, {"role": "assistant", "content": ""}]},
    {"messages": [{"role": "user", "content": "Two in a row"}, {"role": "assistant", "content": "One."},
                  {"role": "assistant", "content": "Two."}]},
    {"instruction": "Sum", "input": "1 2", "output": "3", "system": "Calculator"},
]

ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "function_call": "assistant",
        "observation": "tool", "tool": "tool", "system": "system"}


def to_messages(r):
    """The record as a list of {role, content} (None for text records)."""
    if "messages" in r:
        return [dict(m) for m in r["messages"]]
    if "conversations" in r:
        m = [{"role": "system", "content": r["system"]}] if r.get("system") else []
        return m + [{"role": ROLE[c["from"]], "content": c["value"]} for c in r["conversations"]]
    if "instruction" in r:
        m = [{"role": "system", "content": r["system"]}] if r.get("system") else []
        for u, a in r.get("history") or []:
            m += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        return m + [{"role": "user", "content": r["instruction"] + (r.get("input") or "")},
                    {"role": "assistant", "content": r["output"]}]
    return None


def segments(msgs, default_system, last_only):
    """[(text, trained)] following docs/FORMATS.md."""
    if default_system is not None and msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": default_system}] + msgs
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    segs, p = [], ""
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            p += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
            continue
        segs.append((p + "<|im_start|>assistant\n", False))
        segs.append((m["content"] + "<|im_end|>", (not last_only) or i == last))
        p = "\n" if i + 1 < len(msgs) else ""
    if p:
        segs.append((p, False))
    return segs


def encode(tok, r, default_system, last_only):
    msgs = to_messages(r)
    if msgs is None:
        ids = tok(r["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": ids, "labels": list(ids)}
    ids, labels = [], []
    for text, trained in segments(msgs, default_system, last_only):
        x = tok(text, add_special_tokens=False)["input_ids"]
        ids += x
        labels += x if trained else [-100] * len(x)
    return {"input_ids": ids, "labels": labels}


def main():
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    defaults = {}
    for name in ("qwen1.5", "qwen2", "qwen2.5"):
        tpl = open(f"{OUT}/templates/{name}.jinja").read()
        probe = tok.apply_chat_template([{"role": "user", "content": "hi"}], chat_template=tpl, tokenize=False)
        head = "<|im_start|>system\n"
        assert probe.startswith(head), probe
        defaults[name] = probe[len(head):probe.index("<|im_end|>")]
        # The segments concatenate to the template's own text.
        for r in RECORDS:
            msgs = to_messages(r)
            if msgs is None or any(m["role"] == "assistant" and m["content"][:1].isspace() for m in msgs):
                continue
            if any(m["role"] == "tool" for m in msgs) or msgs[-1]["role"] != "assistant":
                continue   # tool turns are rendered differently by Qwen2.5's template
            text = "".join(t for t, _ in segments(msgs, defaults[name], False))
            want = tok.apply_chat_template(msgs, chat_template=tpl, tokenize=False)
            assert text + "\n" == want, (name, text, want)
    with open(f"{OUT}/templates/expected_default_system.json", "w") as f:
        json.dump(defaults, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(f"{OUT}/chat_records.jsonl", "w") as f:
        for r in RECORDS:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    variants = {"nosys": (None, False), "qwen2": (defaults["qwen2"], False), "nosys_last": (None, True)}
    for v, (sysp, last) in variants.items():
        with open(f"{OUT}/chat_expected_{v}.jsonl", "w") as f:
            for r in RECORDS:
                f.write(json.dumps(encode(tok, r, sysp, last), separators=(",", ":")) + "\n")
    print(defaults)


if __name__ == "__main__":
    main()
