"""Build step that pyproject.toml cannot state: the top-level cli.py installs as tspo_edge.cli.

pyproject.toml holds the metadata and maps the folders index/, train/ and export/ into the
package (package-dir); setuptools maps packages only, not one module, so build_py adds cli.py to
the tspo_edge package here. A wheel, a wheel built from the sdist (which keeps this layout) and
an editable install all take it from there; a source tree finds it through tspo_edge/__init__.py.
"""

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "tspo_edge":
            modules.append((package, "cli", "cli.py"))
        return modules


setup(cmdclass={"build_py": BuildPy})
