"""Build scripts that turn one real source into a city pack under gis/packs/ (development only).

Each source has its own module, run as ``python -m gis.build.<city>``; they may import development-only
libraries (pyrosm, plotly) that runtime gis/ never imports. Builds are deterministic: the same source gives
byte-identical files.
"""
