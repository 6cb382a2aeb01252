"""What a picture keeps of how it was made.

- metadata.py  the record in each PNG (sdgen's JSON and A1111's parameters text), and reading it back
- output.py    output names and folders, numbered names claimed without races, writing the files
"""
