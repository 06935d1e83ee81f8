from __future__ import annotations

from s3batch.cli import main

main()
