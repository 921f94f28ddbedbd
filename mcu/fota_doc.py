# Firmware job documents, decoded on the microcontroller: a pure codec (no I/O).
# The same three forms and rules as the gateway's host_bridge/jobs/documents.py:
#
# - ours:   {"operation": "fota", "url": "https://...", "size": N, "sha256": "<64 hex>",
#            "md5": "<32 hex>", "version": "1.2.3[+4]", "image": 0, "signed": true}
#           url and one of sha256/md5 required; "operation" optional.
# - seed's (Zerynth aws_iot_fota): {"bc_idx": 0|1, "bc_crc": "<md5 hex>", "bc_size": N,
#           "bc_url": "https://..."}; bc_url, bc_crc, bc_size required.  bc_idx named a slot
#           on the seed's devices; MCUboot always receives into the secondary slot of image 0,
#           so 0 and 1 both mean that (and it may be absent).
# - Nordic aws_fota's: {"operation": "app_fw_update", "fwversion": "v1.0.2", "size": N,
#           "location": {"protocol": "https:", "host": "...", "path": "..."}}, no hash (the
#           MCUboot signature protects these).
#
# An "operation" other than fota/app_fw_update, or a document with none of url, bc_*,
# location, is not a firmware job: parse() returns None and the job goes to the job
# callback.  "${aws:iot:s3-presigned-url:URL}" left unreplaced (a local run) yields URL.


MAX_DOCUMENT_CHARS = 32768
MAX_IMAGE_SIZE = 1 << 32
SEED_FIELDS = ("bc_url", "bc_crc", "bc_size", "bc_idx")
_HEX = "0123456789abcdefABCDEF"
_DIGITS = "0123456789"
_PLACEHOLDERS = ("${aws:iot:s3-presigned-url:", "${aws:iot:s3-presigned-url-v2:")


class DocumentError(ValueError):
    """The document asks for a firmware update but cannot be carried out (job REJECTED)."""


def _show(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        text = value.split("?", 1)[0]  # a query string may be a credential
        return repr(text if len(text) <= 60 else text[:57] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _required(doc, name, prefix=""):
    if name not in doc or doc[name] is None:
        raise DocumentError("missing field '%s%s'" % (prefix, name))
    return doc[name]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _size(doc, name, required):
    value = _required(doc, name) if required else doc.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 1 or value > MAX_IMAGE_SIZE:
        raise DocumentError("%s must be a positive integer (bytes), got %s" % (name, _show(value)))
    return value


def _hexfield(doc, name, digits, what, required):
    value = _required(doc, name) if required else doc.get(name)
    if value is None:
        return None
    ok = isinstance(value, str) and len(value) == digits
    if ok:
        for c in value:
            if c not in _HEX:
                ok = False
                break
    if not ok:
        raise DocumentError(
            "%s must be %d hex digits (%s), got %s" % (name, digits, what, _show(value))
        )
    return value.lower()


def parse_version(text):
    """'1.2.3', 'v1.2.3+4' -> (1, 2, 3, 4) within MCUboot's ranges; None if malformed."""
    if not isinstance(text, str):
        return None
    if text[:1] in ("v", "V"):
        text = text[1:]
    main, plus, build = text, "", ""
    cut = text.find("+")
    if cut >= 0:
        main, plus, build = text[:cut], "+", text[cut + 1 :]
    parts = main.split(".")
    if len(parts) != 3 or (plus and not build):
        return None
    nums = []
    for p in parts + ([build] if plus else []):
        if not p or len(p) > 12:
            return None
        for c in p:
            if c not in _DIGITS:  # not str.isdigit(): "²" is a digit int() refuses
                return None
        nums.append(int(p))
    if len(nums) == 3:
        nums.append(0)
    if nums[0] > 255 or nums[1] > 255 or nums[2] > 65535 or nums[3] > 0xFFFFFFFF:
        return None
    return tuple(nums)


def format_version(v):
    s = "%d.%d.%d" % (v[0], v[1], v[2])
    return s + ("+%d" % v[3] if v[3] else "")


def _version(doc, name):
    value = doc.get(name)
    if value is None:
        return None
    v = parse_version(value)
    if v is None:
        raise DocumentError(
            "%s must be MAJOR.MINOR.REVISION[+BUILD] (e.g. 1.2.3 or v1.2.3+4), got %s"
            % (name, _show(value))
        )
    return v


def _url(name, value, allow_http):
    if not isinstance(value, str):
        raise DocumentError("%s must be a string, got %s" % (name, _show(value)))
    url = value.strip()
    if "${" in url:
        inner = None
        for p in _PLACEHOLDERS:
            if url.startswith(p) and url.endswith("}"):
                inner = url[len(p) : -1].strip()
        if inner is None or "{" in inner or "}" in inner:
            raise DocumentError(
                "%s holds a placeholder other than ${aws:iot:s3-presigned-url:...}" % name
            )
        url = inner
    for c in url:
        if c < "!" or c > "~":  # as the gateway: printable ASCII, no spaces
            raise DocumentError(
                "%s must be plain ASCII without spaces (percent-encode other characters)" % name
            )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme != "https" and not (scheme == "http" and allow_http):
        raise DocumentError("%s must be an https:// URL, got %s" % (name, _show(url)))
    if not _authority_ok(url.split("://", 1)[1]):
        raise DocumentError("%s is not a usable URL: %s" % (name, _show(url)))
    return url


def _authority_ok(rest):
    """host[:port] up to the first / ? or #: a host, no user@, a port of 0..65535 if any."""
    end = len(rest)
    for c in "/?#":
        i = rest.find(c)
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if "@" in authority:
        return False
    if authority.startswith("["):  # an IPv6 literal
        close = authority.find("]")
        if close < 0:
            return False
        host, port = authority[: close + 1], authority[close + 1 :]
        if port and port[0] != ":":
            return False
        port = port[1:]
    else:
        cut = authority.find(":")
        host, port = (authority, "") if cut < 0 else (authority[:cut], authority[cut + 1 :])
    digits = port.lstrip("0")
    if not host or len(digits) > 5:
        return False
    for c in port:
        if c not in _DIGITS:
            return False
    return not digits or int(digits) <= 65535


def _spec(source, url, size=None, md5=None, sha256=None, version=None, image=0, signed=None):
    return {
        "source": source,
        "url": url,
        "size": size,
        "md5": md5,
        "sha256": sha256,
        "version": version,
        "image": image,
        "signed": signed,
    }


def _seed(doc, allow_http):
    url = _url("bc_url", _required(doc, "bc_url"), allow_http)
    md5 = _hexfield(doc, "bc_crc", 32, "an MD5", True)
    size = _size(doc, "bc_size", True)
    idx = doc.get("bc_idx")
    if idx is not None and (not _is_int(idx) or idx not in (0, 1)):
        raise DocumentError(
            "bc_idx must be 0 or 1 (both mean: write image 0's secondary slot), got %s" % _show(idx)
        )
    return _spec("seed", url, size, md5=md5)


def _nordic(doc, allow_http):
    loc = _required(doc, "location")
    if not isinstance(loc, dict):
        raise DocumentError(
            "location must be an object with protocol, host and path, got %s" % _show(loc)
        )
    if loc.get("url") is not None:
        url = _url("location.url", loc["url"], allow_http)
    else:
        proto = loc.get("protocol", "https:")
        if not isinstance(proto, str) or proto.lower().rstrip(":") not in ("https", "http"):
            raise DocumentError("location.protocol must be 'https:', got %s" % _show(proto))
        host = _required(loc, "host", "location.")
        path = _required(loc, "path", "location.")
        if not isinstance(host, str) or not isinstance(path, str) or not path.strip("/"):
            raise DocumentError("location needs a host name and the file's path")
        for c in "/?#@ ":
            if c in host:  # the URL would name another host than the one written
                raise DocumentError("location.host must be a host name, got %s" % _show(host))
        url = _url(
            "location",
            "%s://%s/%s" % (proto.lower().rstrip(":"), host, path.lstrip("/")),
            allow_http,
        )
    return _spec("nordic", url, _size(doc, "size", False), version=_version(doc, "fwversion"))


def _native(doc, allow_http):
    url = _url("url", _required(doc, "url"), allow_http)
    sha256 = _hexfield(doc, "sha256", 64, "a SHA-256", False)
    md5 = _hexfield(doc, "md5", 32, "an MD5", False)
    if sha256 is None and md5 is None:
        raise DocumentError(
            "missing field 'sha256' (or 'md5'): the download must be checked against a hash"
        )
    image = doc.get("image")
    if image is None:
        image = 0
    elif not _is_int(image) or not 0 <= image <= 255:
        raise DocumentError("image must be an MCUboot image number 0..255, got %s" % _show(image))
    signed = doc.get("signed")
    if signed is not None and not isinstance(signed, bool):
        raise DocumentError("signed must be true or false, got %s" % _show(signed))
    return _spec(
        "native",
        url,
        _size(doc, "size", False),
        md5,
        sha256,
        _version(doc, "version"),
        image,
        signed,
    )


def parse(document, allow_http=False):
    """A firmware spec dict (source, url, size, md5, sha256, version tuple, image, signed),
    or None for a job that is not a firmware update.  Raises DocumentError."""
    if isinstance(document, (str, bytes)):
        import json  # only for documents given as text: spares the RAM otherwise

        if len(document) > MAX_DOCUMENT_CHARS:
            raise DocumentError("job document is longer than %d characters" % MAX_DOCUMENT_CHARS)
        try:
            document = json.loads(document)
        except (ValueError, RuntimeError):
            # RuntimeError: nesting past the interpreter's recursion limit (RecursionError on
            # CPython, RuntimeError on MicroPython and CircuitPython).
            raise DocumentError("job document is not valid JSON")
    if not isinstance(document, dict):
        raise DocumentError("job document must be a JSON object, got %s" % _show(document))
    op = document.get("operation")
    if op is not None and not isinstance(op, str):
        raise DocumentError("operation must be a string, got %s" % _show(op))
    if op is not None and op not in ("fota", "app_fw_update"):
        return None
    if op == "app_fw_update":
        return _nordic(document, allow_http)
    if op == "fota":
        return _native(document, allow_http)
    forms = []
    for key in SEED_FIELDS:
        if key in document:
            forms.append("seed (bc_*)")
            break
    if "location" in document:
        forms.append("Nordic (location)")
    if "url" in document:
        forms.append("native (url)")
    if not forms:
        return None
    if len(forms) > 1:
        raise DocumentError(
            "job document mixes the %s and %s forms: give one, or an operation"
            % (forms[0], forms[1])
        )
    if "url" in document:
        return _native(document, allow_http)
    if "location" in document:
        return _nordic(document, allow_http)
    return _seed(document, allow_http)


def identity(spec):
    """What names the image independently of its (possibly presigned, changing) URL."""
    return (spec["size"], spec["md5"], spec["sha256"], spec["version"])
