"""The bodies batch output files hold are the API's own answers, field for field."""

import numpy as np

from api.chat.render import completion_body as chat_body
from api.completions.render import completion_body as completion_body
from api.embeddings.protocol import embeddings_body as api_embeddings_body
from contracts.events import Choice, EmbeddingResult, GenerationResult, Usage
from contracts.openai_bodies import chat_completion_body, embeddings_body, text_completion_body

RESULT = GenerationResult(
    choices=[Choice(index=0, text="a", finish_reason="stop"), Choice(index=1, text="b", finish_reason="cancelled")],
    usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
)


def test_chat_and_completion_bodies_match_the_api():
    assert chat_completion_body("j", "m", 7, RESULT) == chat_body("j", "m", 7, RESULT)
    echoed = ["p1"]
    assert text_completion_body("j", "m", 7, RESULT, echoed, 2) == completion_body("j", "m", 7, RESULT, echoed, 2)


def test_embedding_bodies_match_the_api():
    result = EmbeddingResult.of(np.array([[0.5, -1.0], [2.0, 0.25]]), prompt_tokens=4, batch_size=2)
    for encoding in ("float", "base64"):
        assert embeddings_body("m", result, encoding) == api_embeddings_body("m", result, encoding)
