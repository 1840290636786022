"""Server-Sent Events framing."""

from api.sse import DONE_FRAME, sse_frame


def test_a_frame_is_a_data_line_and_a_blank_line():
    assert sse_frame("hello") == "data: hello\n\n"


def test_id_and_event_come_before_the_data():
    assert sse_frame("{}", event="delta", event_id="1-0") == "id: 1-0\nevent: delta\ndata: {}\n\n"


def test_each_line_of_multi_line_data_is_its_own_data_field():
    assert sse_frame("a\nb") == "data: a\ndata: b\n\n"


def test_the_done_frame_is_openais():
    assert DONE_FRAME == "data: [DONE]\n\n"
