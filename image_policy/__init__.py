"""The image policy both services apply to uploads, in one place (two copies of a security check
drift apart). Pure: Pillow, pillow_heif (HEIF) and the standard library.

formats.py       the check: ``probe`` (header), ``probe_head`` (the same from a file's first
                 bytes, where they suffice), ``measure`` (pre-scan only), ``open_image``
errors.py        ``ImageRejected`` and ``CODES``, the one rejection both services give
sniff.py         the format allow-list, and what rejected bytes claim to be by signature
pillow_setup.py  Pillow's process-wide settings while any thread checks or renders
prescan.py       the bounded structural pre-scan, one walker a format (jpeg, png, gif, riff,
                 bmff, exif) spending the caps in walk.py (``ScanLimits``, ``Structure``)
"""
