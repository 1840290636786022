"""Stop strings: text is released only once it cannot be the start of a stop string."""

from worker.engines.stop_strings import StopStringFilter


def test_text_without_a_stop_passes_through_at_once():
    assert StopStringFilter(["END"]).feed("hello there") == "hello there"


def test_text_is_cut_before_the_stop_string():
    stops = StopStringFilter(["END"])
    assert stops.feed("one two END three") == "one two "
    assert stops.stopped


def test_nothing_is_released_after_a_stop():
    stops = StopStringFilter(["END"])
    stops.feed("a END")
    assert stops.feed("more") == ""
    assert stops.flush() == ""


def test_a_possible_start_of_a_stop_is_held_back():
    stops = StopStringFilter(["END"])
    assert stops.feed("abc E") == "abc "
    assert not stops.stopped


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop():
    stops = StopStringFilter(["END"])
    stops.feed("abc EN")
    assert stops.feed("X") == "ENX"


def test_a_stop_split_across_pieces_is_found():
    stops = StopStringFilter(["END"])
    released = stops.feed("abc E") + stops.feed("N") + stops.feed("D tail")
    assert released == "abc "
    assert stops.stopped


def test_the_earliest_of_several_stops_wins():
    assert StopStringFilter(["zz", "b"]).feed("a b zz") == "a "


def test_flush_releases_what_was_held_when_the_sequence_ends():
    stops = StopStringFilter(["END"])
    stops.feed("abc EN")
    assert stops.flush() == "EN"


def test_empty_stop_strings_are_ignored():
    assert StopStringFilter([""]).feed("text") == "text"


def test_the_stop_string_that_ended_the_text_is_named():
    stops = StopStringFilter(["END", "stop here"])
    assert stops.feed("some text, stop he") == "some text, "
    assert stops.matched is None
    assert stops.feed("re and END") == ""
    assert stops.stopped and stops.matched == "stop here"  # the earliest in the text, not the first listed
