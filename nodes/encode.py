"""Conditioning nodes: VLM Encode, T5 Encode, Style Select."""

from __future__ import annotations

from ..uniworld_core.conditioning import BUILTIN_STYLES, Style, StyleSpec, all_styles
from ..uniworld_core.errors import InputError
from . import comfy_env
from .types import CATEGORY, COND, STYLE, TEXT_ENCODER, Condition, spec

NO_STYLE = "none"
STYLE_TOOLTIP = "The 12 Uniworld-OSP2.0 styles:\n" + "\n".join(
    f"- {s.name}: {s.description}" for s in BUILTIN_STYLES) + (
    "\nWith the built-in miniature model installed, its toy-world styles (photo, neon, pencil sketch) too."
    "\nCustom styles: add them to uniworld_styles.json in the models folder.")
NEGATIVE_TOOLTIP = ("What to steer away from. Empty = the official negative prompt; with a style, "
                    "without its terms 'style, works, paintings, images', which fight stylisation.")


def _styles() -> dict[str, Style]:
    """Built-in styles, the miniature model's own (when installed), then the user's (which win on a name)."""
    return all_styles([*comfy_env.builtin_style_folders(), comfy_env.models_folder()])


def _encode(text_encoder, kind: str, image, prompt: str, negative_prompt: str, style):
    if text_encoder.kind != kind:
        wanted = {"vlm": "UniWorld VLM Loader", "umt5": "UniWorld umT5 Loader"}[kind]
        raise InputError(f"a {text_encoder.description} text encoder", f"the output of {wanted}")
    picture = image[0] if image is not None else None
    if kind == "vlm" and picture is None:
        raise InputError("no image", "the conditioning image (it is part of the VLM prompt)")
    positive, negative = text_encoder.conditioner.encode(
        picture, prompt, style or StyleSpec(), negative_prompt.strip() or None)
    return (Condition(positive, prompt, text_encoder.description),
            Condition(negative, negative_prompt, text_encoder.description))


class _EncodeNode:
    """What both prompt-encoding nodes share: category, outputs."""

    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (COND, COND)
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("Conditioning for the prompt.", "Conditioning for the negative prompt.")


class UniWorldVLMEncode(_EncodeNode):
    DESCRIPTION = ("Qwen2.5-VL reads the image and the prompt (plus the style) and the adapter turns its "
                   "hidden states into the DiT's conditioning. Identical inputs are not encoded twice.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": spec(TEXT_ENCODER, "From UniWorld VLM Loader."),
            "image": spec("IMAGE", "The start image (the same one the sampler animates)."),
            "prompt": spec("STRING", "What happens in the video.", multiline=True, default=""),
            "negative_prompt": spec("STRING", NEGATIVE_TOOLTIP, multiline=True, default=""),
        }, "optional": {"style": spec(STYLE, "From UniWorld Style Select.")}}

    def encode(self, text_encoder, image, prompt, negative_prompt, style=None):
        return _encode(text_encoder, "vlm", image, prompt, negative_prompt, style)


class UniWorldT5Encode(_EncodeNode):
    DESCRIPTION = "umT5 encodes the prompt for FlashI2V-1.3B (512 tokens, official cut-and-pad)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": spec(TEXT_ENCODER, "From UniWorld umT5 Loader."),
            "prompt": spec("STRING", "What happens in the video.", multiline=True, default=""),
            "negative_prompt": spec("STRING", NEGATIVE_TOOLTIP, multiline=True, default=""),
        }, "optional": {"style": spec(STYLE, "From UniWorld Style Select.")}}

    def encode(self, text_encoder, prompt, negative_prompt, style=None):
        return _encode(text_encoder, "umt5", None, prompt, negative_prompt, style)


class UniWorldStyleSelect:
    DESCRIPTION = "Picks one of the 12 styles (or your own text), its strength, and an optional second style."
    CATEGORY = CATEGORY
    FUNCTION = "select"
    RETURN_TYPES = (STYLE,)
    RETURN_NAMES = ("style",)
    OUTPUT_TOOLTIPS = ("Feed into VLM Encode or T5 Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        names = [NO_STYLE, *_styles()]
        return {"required": {
            "style": spec(names, STYLE_TOOLTIP, default=BUILTIN_STYLES[0].name),
            "strength": spec("FLOAT", "0 = no style, 1 = full style; in between blends the two.",
                             default=1.0, min=0.0, max=1.0, step=0.05),
            "custom_text": spec("STRING", "Your own style words (used instead of the list when set).",
                                default=""),
            "mix_style": spec(names, "A second style to mix in (none = no mix).", default=NO_STYLE),
            "mix_weight": spec("FLOAT", "Share of the second style in the mix.", default=0.5,
                               min=0.0, max=1.0, step=0.05),
        }}

    def select(self, style, strength, custom_text, mix_style, mix_weight):
        styles = _styles()
        chosen = Style("custom", custom_text, custom_text) if custom_text.strip() else styles.get(style)
        second = styles.get(mix_style) if mix_style != NO_STYLE and mix_weight > 0 else None
        if chosen is None and second is None:
            return (StyleSpec(),)
        if chosen is None:
            chosen, second = second, None
        weights = (1.0 - mix_weight, mix_weight)
        return (StyleSpec(chosen, strength, second, weights),)


NODES = {"UniWorldVLMEncode": (UniWorldVLMEncode, "UniWorld VLM Encode"),
         "UniWorldT5Encode": (UniWorldT5Encode, "UniWorld T5 Encode"),
         "UniWorldStyleSelect": (UniWorldStyleSelect, "UniWorld Style Select")}
