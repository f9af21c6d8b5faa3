#!/usr/bin/env python3
"""Counts the objects and bytes under a prefix of an S3 bucket: prints "OBJECTS BYTES".

    python3 scripts/s3_list.py BUCKET PREFIX

The endpoint and keys come from AWS_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, as
for `logstorfs mount --remote`. ListObjects (v1, path-style) signed with AWS signature v2,
which Ceph RGW and most S3-compatible gateways accept, so that the benchmark scripts need no
S3 client installed.
"""
import base64
import hashlib
import hmac
import os
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from email.utils import formatdate

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def list_prefix(endpoint, access, secret, bucket, prefix):
    objects = size = 0
    marker = ""
    while True:
        date = formatdate(usegmt=True)
        to_sign = f"GET\n\n\n{date}\n/{bucket}".encode()
        signature = base64.b64encode(hmac.new(secret.encode(), to_sign, hashlib.sha1).digest())
        query = urllib.parse.urlencode({"prefix": prefix, "marker": marker, "max-keys": "1000"})
        request = urllib.request.Request(
            f"{endpoint}/{bucket}?{query}",
            headers={"Date": date, "Authorization": f"AWS {access}:{signature.decode()}"},
        )
        root = ET.fromstring(urllib.request.urlopen(request, timeout=60).read())
        keys = root.findall(NS + "Contents")
        for content in keys:
            objects += 1
            size += int(content.find(NS + "Size").text)
        if root.findtext(NS + "IsTruncated") != "true" or not keys:
            return objects, size
        marker = keys[-1].find(NS + "Key").text


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: s3_list.py BUCKET PREFIX")
    try:
        endpoint = os.environ["AWS_ENDPOINT"]
        access = os.environ["AWS_ACCESS_KEY_ID"]
        secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    except KeyError as missing:
        sys.exit(f"s3_list.py: {missing.args[0]} is not set")
    objects, size = list_prefix(endpoint, access, secret, sys.argv[1], sys.argv[2])
    print(objects, size)


if __name__ == "__main__":
    main()
