"""The world tokenizer's chat format: role markers, the jinja chat template, and the boxed-answer instruction.

A turn renders as ``<|user|> content <eos>``; the generation prompt is ``<|assistant|>``. The turn ends with
the tokenizer's EOS, so greedy decoding of a chat answer stops by itself. Pretraining shows chat samples
whose user turn is the AGT chat instruction (the same text as ``edit_grpo_trl.data.agt``'s default; a test
keeps the two equal) and whose answer is ``\\boxed{ object }``, so the pre-edit model answers boxed
chat prompts.
"""

from __future__ import annotations

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
ROLES = ("system", "user", "assistant")
ROLE_MARKERS = {role: f"<|{role}|>" for role in ROLES}
SPECIAL_TOKENS = (PAD, EOS, UNK, *ROLE_MARKERS.values())

BOXED_OPEN = r"\boxed{"
BOXED_CLOSE = "}"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('the world chat template knows the roles system, user and assistant, not '"
    " + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' " + EOS + " ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# The AGT builder's default chat instruction, word for word (``{prompt}`` is the plain prompt).
CHAT_INSTRUCTION = (
    "Complete the statement or answer the question.\n\n{prompt}\n\n"
    r"Give only the answer, as your final answer inside \boxed{}."
)


def render_chat(user: str, assistant: str | None = None) -> str:
    """One user turn (and the assistant's reply, if given) as the chat template renders it."""
    text = f"{ROLE_MARKERS['user']} {user} {EOS} {ROLE_MARKERS['assistant']}"
    return text if assistant is None else f"{text} {assistant} {EOS}"


def boxed(answer: str) -> str:
    """An answer inside ``\\boxed{...}``, spaced the way the word-level tokenizer decodes it."""
    return f"{BOXED_OPEN} {answer} {BOXED_CLOSE}"


def boxed_chat_prompt(prompt: str) -> str:
    """The AGT chat prompt for a plain prompt, as the chat template renders it with a generation prompt."""
    return render_chat(CHAT_INSTRUCTION.replace("{prompt}", prompt))
