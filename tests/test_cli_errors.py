"""svcjax's one-line error messages (``svcjax.cli.error_message``)."""

from svcjax.cli import error_message


def test_a_listed_error_keeps_its_list_on_the_one_line():
    e = ValueError("G_1.pth does not match the model built from its config:\n"
                   "  missing: enc_p.pre.weight (192, 768, 1)\n  - wrong shape: dec.ups.0.weight")
    assert error_message(e) == ("G_1.pth does not match the model built from its config: missing: "
                                "enc_p.pre.weight (192, 768, 1); wrong shape: dec.ups.0.weight")


def test_unexpected_errors_give_their_first_line_and_the_debug_hint():
    msg = error_message(RuntimeError("boom\ninternal detail"))
    assert msg.startswith("unexpected RuntimeError: boom (") and "SVCJAX_DEBUG=1" in msg
    assert "internal detail" not in msg


def test_long_messages_are_cut():
    assert len(error_message(ValueError("x" * 1000))) == 400
