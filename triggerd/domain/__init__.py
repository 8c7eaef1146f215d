"""The bottom layer: types, enums, timing math, the job codec and errors. It imports
nothing else of triggerd, so every other layer may build on it."""
