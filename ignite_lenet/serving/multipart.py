"""The ``file`` parts of a multipart/form-data body that is in memory already.

The body is bounded by ``--max-body-bytes`` and read whole before it is classified, so its parts are slices of
it. Starlette's streaming parser (python-multipart's byte-level state machine, a spooled temporary file and an
``UploadFile`` per part, an ``await`` per write and read) is built for uploads too large for memory and cost
~18 us per part here, as much as decoding the digit; splitting on the boundary costs ~3 us. The part headers are
parsed with python-multipart's ``parse_options_header``, as Starlette does. It runs on the worker thread, with
the decoding, so a 1,000-part body does not hold the event loop either.
"""

from __future__ import annotations

from python_multipart.multipart import parse_options_header

from ignite_lenet.serving.errors import BadRequest

MAX_BOUNDARY = 200  # RFC 2046 allows 70 characters; some clients send longer ones
MAX_FIELDS = 64  # non-file parts (ignored, but each is parsed)
FIELD = b"file"


def file_parts(body: bytes, content_type: str, max_files: int) -> list[tuple[str, bytes | None]]:
    """``(file name, bytes)`` of each ``file`` part in order; ``(name or "", None)`` for a ``file`` part without a
    file name (a plain field). Raises ``BadRequest`` for a malformed body, too many parts or no ``file`` part."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary parameter in its Content-Type")
    if len(boundary) > MAX_BOUNDARY:
        raise BadRequest(f"the multipart boundary is longer than {MAX_BOUNDARY} characters")
    delimiter = b"--" + boundary
    start = body.find(delimiter)  # the first delimiter: at the very start, or after a preamble line
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise BadRequest("not a multipart body: no boundary line")
    chunks = body[start + len(delimiter) :].split(b"\r\n" + delimiter)
    if not chunks[-1].startswith(b"--"):
        raise BadRequest("truncated multipart body: the closing boundary is missing")
    parts: list[tuple[str, bytes | None]] = []
    files = fields = 0
    for chunk in chunks[:-1]:
        line_end = chunk.find(b"\r\n")  # the rest of the delimiter line: only transport padding may be there
        if line_end < 0 or chunk[:line_end].strip(b" \t"):
            raise BadRequest("malformed multipart body: a boundary line with something after it")
        head, separated, data = chunk[line_end + 2 :].partition(b"\r\n\r\n")
        if not separated:
            raise BadRequest("malformed multipart body: a part without a blank line after its headers")
        name = filename = None
        for line in head.split(b"\r\n"):
            key, colon, value = line.partition(b":")
            if not colon:
                raise BadRequest("malformed multipart body: a part header without a colon")
            if key.strip().lower() == b"content-disposition":
                _, options = parse_options_header(value)
                name, filename = options.get(b"name"), options.get(b"filename")
        if name is None:
            raise BadRequest('a multipart part without a Content-Disposition "name"')
        if filename is None:
            fields += 1
            if fields > MAX_FIELDS:
                raise BadRequest(f"too many multipart fields: at most {MAX_FIELDS} besides the files")
            if name == FIELD:
                parts.append(("", None))
            continue
        files += 1
        if files > max_files:
            raise BadRequest(f"too many files: at most {max_files:,} per request (--max-files)")
        if name == FIELD:
            parts.append((filename.decode("utf-8", "replace"), data))
    if not parts:
        raise BadRequest("no 'file' parts in the multipart body: send each image as a part named 'file'")
    return parts
